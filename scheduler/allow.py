"""The allow-list: the module prefixes a schedule's target may call.

Write access to Redis is code execution: RQ imports and calls whatever a job names.
An allow-list (``--allow myapp.jobs,reports`` / ``RQBEAT_ALLOW``) narrows that to the
named packages. It is enforced twice:

* on write (``rqbeat add``, ``rqbeat apply``, ``Client(..., allow=...)``): a target
  outside the list is refused with ``InvalidSchedule(field="target")``, nothing written;
* on dispatch (``rqbeat run --allow``): the running replica's own list is the
  authority, never anything stored in Redis, so a schedule written into Redis by hand
  cannot call ``os.system``. Such a schedule is marked ``broken`` and never enqueued.

Matching is by whole dotted segments: ``myapp`` allows ``myapp.jobs.report`` but not
``myapplication.x``; a trailing dot (``reports.``) means the same as none. Without a
list every target is allowed, as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scheduler.errors import ConfigError, InvalidSchedule

_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True, slots=True)
class AllowList:
    """Module prefixes, each a tuple of dotted-path segments."""

    prefixes: tuple[tuple[str, ...], ...]

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
            prefixes.append(tuple(name.split(".")))
        if not prefixes:
            raise ConfigError(setting, text, "names no module prefix")
        return cls(tuple(prefixes))

    def permits(self, target: str) -> bool:
        """Whether ``target`` (``pkg.module.func``) lies under one of the prefixes."""
        return permits(self.prefixes, target)

    def check(self, target: str) -> None:
        """Raise :class:`InvalidSchedule` for the ``target`` field unless permitted."""
        if not self.permits(target):
            raise InvalidSchedule("target", target, f"is not in the allow-list ({self})")

    def __str__(self) -> str:
        return ", ".join(".".join(p) for p in self.prefixes)


def permits(prefixes: tuple[tuple[str, ...], ...], target: str) -> bool:
    """Pure matching by whole segments: ``("myapp",)`` permits ``myapp.x`` only."""
    segments = tuple(target.split("."))
    return any(segments[: len(prefix)] == prefix for prefix in prefixes)
