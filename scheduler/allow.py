"""The allow-list: the module prefixes whose code a schedule's target may call.

Write access to Redis is code execution: RQ imports and calls whatever a job names.
An allow-list (``--allow myapp.jobs,reports`` / ``RQBEAT_ALLOW``) narrows that to code
*defined* in the named packages. It is enforced twice:

* on write (``rqbeat add``, ``rqbeat apply``, ``Client(..., allow=...)``): a target
  outside the list is refused with ``InvalidSchedule(field="target")``, nothing written;
* on dispatch (``rqbeat run --allow``): the running replica's own list is the
  authority, never anything stored in Redis, so a schedule written into Redis by hand
  cannot call ``os.system``. Such a schedule is marked ``broken`` and never enqueued.

A name under a prefix is not enough: RQ resolves ``myapp.os.system`` by importing
``myapp`` and walking to its ``os`` attribute, which is the ``os`` module when
``myapp`` does ``import os`` (``rq.utils.import_attribute``). So a target passes two
checks:

1. **by name** (:meth:`AllowList.refusal`, pure): it lies under a prefix (whole
   dotted segments: ``myapp`` allows ``myapp.jobs.report``, not ``myapplication.x``;
   a full path allows that callable), no segment is a dunder (``__builtins__``,
   ``__import__``) and no segment below the prefix is private (``_x``): private
   names are no API to call from Redis, and refusing them by name holds where the
   code cannot be imported. Private code is allowed by naming it in the list
   (``--allow myapp._tasks``).
2. **by what it resolves to** (:func:`resolve`), where the code imports: resolved
   exactly as RQ will, every module on the way must lie under a prefix (no walk
   through an imported ``os``) and the callable's ``__module__`` too (no
   ``from os import system`` re-export; methods of classes defined under a prefix
   are fine). A prefix that names a callable in full allows it only if it is
   defined there (``__module__.__qualname__``).

Where the target does not import, only the name check applies: the verdict says so
(``resolved=False``) and callers warn. Verdicts are memoized per target, so the
dispatch hot path pays one dict lookup per schedule. The list trusts the code under
its prefixes: whatever that code defines is callable with arguments from Redis.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from scheduler.errors import ConfigError, InvalidSchedule

_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
#: Distinct targets whose verdicts one list keeps; past it the memo starts over (a
#: flood of hand-written targets must not grow a replica's memory without bound).
VERDICTS_KEPT = 65_536

Prefixes = tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether ``target`` may be called; ``resolved`` tells whether it was imported
    and checked by what it is, or (False) by its name alone; ``reason`` says why it
    was refused or why it was not resolved."""

    target: str
    allowed: bool
    resolved: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Walk:
    """How RQ reaches a target: the module it imports, the attribute it takes the
    callable from when that is not the module itself, and the callable."""

    module: ModuleType
    owner: object | None
    value: object


@dataclass(frozen=True, slots=True)
class AllowList:
    """Module prefixes, each a tuple of dotted-path segments."""

    prefixes: Prefixes
    _verdicts: dict[str, Verdict] = field(default_factory=dict, init=False, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str | None, *, setting: str = "--allow") -> AllowList | None:
        """From ``"myapp.jobs, reports."``; None when ``text`` is unset or blank (no list).

        Raises :class:`ConfigError` naming ``setting`` for an item that is not a
        dotted module path."""
        if text is None or not text.strip():
            return None
        prefixes = []
        for item in text.split(","):
            name = item.strip().removesuffix(".")
            if not name:
                continue  # "a,,b" and a trailing comma are harmless
            if not _PREFIX.fullmatch(name):
                raise ConfigError(
                    setting, item.strip(), "each prefix must be a dotted module path, e.g. myapp.jobs"
                )
            if any(_is_dunder(part) for part in name.split(".")):
                raise ConfigError(setting, item.strip(), "a prefix cannot name a dunder (__x__)")
            prefixes.append(tuple(name.split(".")))
        if not prefixes:
            raise ConfigError(setting, text, "names no module prefix")
        return cls(tuple(prefixes))

    def permits(self, target: str) -> bool:
        """Whether ``target`` passes the check by name (see :meth:`refusal`)."""
        return refusal(self.prefixes, target) is None

    def refusal(self, target: str) -> str | None:
        """Why ``target``'s name alone is refused, or None (pure, no import)."""
        return refusal(self.prefixes, target)

    def judge(self, target: str, on_new: Callable[[Verdict], None] | None = None) -> Verdict:
        """The verdict on ``target``: by name, then by what it resolves to where it
        imports. Memoized per target (an import happens once); ``on_new`` is called
        with a verdict when it is first reached, not when it is remembered."""
        verdict = self._verdicts.get(target)
        if verdict is None:
            verdict = self._judge(target)
            if len(self._verdicts) >= VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[target] = verdict
            if on_new is not None:
                on_new(verdict)
        return verdict

    def check(self, target: str, field: str = "target") -> Verdict:
        """Raise :class:`InvalidSchedule` for ``field`` unless ``target`` is allowed;
        the verdict otherwise (``resolved=False``: allowed by name only, warn)."""
        verdict = self.judge(target)
        if not verdict.allowed:
            raise InvalidSchedule(field, target, self.explain(verdict))
        return verdict

    def explain(self, verdict: Verdict) -> str:
        """``is not in the allow-list (<prefixes>)``, with the reason for a refusal
        the prefixes alone do not explain."""
        detail = "" if verdict.reason == _OUTSIDE else f": {verdict.reason}"
        return f"is not in the allow-list ({self}){detail}"

    def _judge(self, target: str) -> Verdict:
        reason = refusal(self.prefixes, target)
        if reason is not None:
            return Verdict(target, allowed=False, resolved=False, reason=reason)
        walk = resolve(target)
        if isinstance(walk, str):
            return Verdict(target, allowed=True, resolved=False, reason=walk)
        reason = walk_refusal(self.prefixes, target, walk)
        return Verdict(target, allowed=reason is None, resolved=True, reason=reason or "")

    def __str__(self) -> str:
        return ", ".join(".".join(p) for p in self.prefixes)


_OUTSIDE = "lies under none of its prefixes"


def refusal(prefixes: Prefixes, target: str) -> str | None:
    """The check by name, pure: why ``target`` is refused, or None.

    Inside a prefix by whole segments (``("myapp",)`` permits ``myapp.x`` only), with
    no dunder segment anywhere and no private segment below the prefix."""
    segments = tuple(target.split("."))
    dunders = [s for s in segments if _is_dunder(s)]
    if dunders:
        return f"names a dunder ({dunders[0]})"
    inside = [segments[len(p) :] for p in prefixes if segments[: len(p)] == p]
    if not inside:
        return _OUTSIDE
    if all(any(s.startswith("_") for s in rest) for rest in inside):
        return "names a private attribute or module (_x) below its prefix"
    return None


def under(prefixes: Prefixes, module_name: object) -> bool:
    """Whether ``module_name`` is a prefix's module or one of its submodules."""
    if not isinstance(module_name, str):
        return False
    segments = tuple(module_name.split("."))
    return any(segments[: len(p)] == p for p in prefixes)


def resolve(target: str) -> Walk | str:
    """Resolve ``target`` as ``rq.utils.import_attribute`` does (RQ 2.12 and 3.0):
    import the longest prefix that imports, then take the rest as one attribute, or
    else the last segment of the attribute named by the others. A string says why it
    could not be resolved here, in one line: ``cannot import myapp.jobs: No module
    named 'myapp'`` (the error of the module the target names), ``myapp.jobs has no
    attribute ok``. Workers log and record that line for a run whose target does not
    import (:mod:`workers.importfail`); ``add``/``set``/``apply`` warn with it."""
    bits = target.split(".")
    failed: tuple[str, ImportError] | None = None  # the longest module that did not import
    for cut in range(len(bits) - 1, 0, -1):
        name = ".".join(bits[:cut])
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            failed = failed or (name, exc)
            continue
        except (Exception, SystemExit) as exc:  # noqa: BLE001 -- app code run at import must not end a replica
            return f"importing {name} raised {_describe(exc)}"
        walk = _walk(module, name, bits[cut:])
        if (
            isinstance(walk, str)
            and failed is not None
            and (hasattr(module, "__path__") or _broke_inside(*failed))
        ):
            # a package's missing submodule, or one whose own imports fail: that, not
            # "myapp has no attribute jobs.ok", is what the user must fix (below a
            # plain module the rest can only be attributes: pkg.mod.Class.method)
            return _cannot_import(*failed)
        return walk
    return _cannot_import(*failed) if failed is not None else f"no module of {target} imports here"


def _broke_inside(name: str, exc: ImportError) -> bool:
    """The module was found but raised ImportError while importing (a missing
    dependency), as opposed to not existing (``pkg.mod.Class`` is no module)."""
    missing = getattr(exc, "name", None)
    return (
        isinstance(exc, ModuleNotFoundError)
        and missing is not None
        and not f"{name}.".startswith(f"{missing}.")
    )


def _cannot_import(name: str, exc: ImportError) -> str:
    return f"cannot import {name}: {_describe(exc).partition(': ')[2] or type(exc).__name__}"


def _walk(module: ModuleType, module_name: str, rest: list[str]) -> Walk | str:
    name = ".".join(rest)
    try:
        if hasattr(module, name):
            return Walk(module, None, getattr(module, name))
        owner = getattr(module, ".".join(rest[:-1]))
        return Walk(module, owner, getattr(owner, rest[-1]))
    except AttributeError:
        return f"{module_name} has no attribute {name}"
    except Exception as exc:  # noqa: BLE001 -- a module's __getattr__ is app code; any error means unresolved
        return f"looking up {name} in {module_name} raised {_describe(exc)}"


def walk_refusal(prefixes: Prefixes, target: str, walk: Walk) -> str | None:
    """The check by what RQ will call: every module on the way and the callable's
    defining module lie under a prefix; or the callable is defined exactly at
    ``target`` and a prefix names it in full. Why not, or None."""
    if isinstance(walk.value, ModuleType) or not callable(walk.value):
        return "does not resolve to a callable"
    if tuple(target.split(".")) in prefixes and _defined_at(walk.value) == target:
        return None
    if isinstance(walk.owner, ModuleType) and not under(prefixes, walk.owner.__name__):
        return f"walks through module {walk.owner.__name__}, which is outside it"
    defined_in = getattr(walk.value, "__module__", None)
    if not under(prefixes, defined_in):
        return f"resolves to a callable defined in {defined_in}, outside it"
    module_name = getattr(walk.module, "__name__", None)  # sys.modules may hold any object
    if not under(prefixes, module_name):  # reached from a parent of every prefix
        return f"walks through module {module_name}, which is outside it"
    return None


def _defined_at(value: object) -> str | None:
    """``module.qualname`` where ``value`` was defined, if it says."""
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else None


def _describe(exc: BaseException) -> str:
    """One short line for a log: app code's exception text may be long or multi-line."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first[:200]}"


def _is_dunder(segment: str) -> bool:
    return len(segment) > 4 and segment.startswith("__") and segment.endswith("__")
