"""The schedule definition: a frozen, validated value.

A :class:`Schedule` can only exist in a valid state: ``__post_init__`` checks every
field and raises :class:`~scheduler.errors.InvalidSchedule` naming the field, the value
and the reason. :meth:`Schedule.from_dict` accepts what people write (TOML, JSON,
CLI flags: durations as ``"30s"``) and refuses unknown keys instead of dropping them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from functools import cached_property
from typing import Any

from scheduler import cron as triggers
from scheduler import windows
from scheduler.durations import format_duration, parse_duration_ms
from scheduler.errors import InvalidSchedule

#: RQ job ids allow only this alphabet, and a run's job id embeds the schedule id.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,100}")
TARGET_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
QUEUE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
OWNER_PATTERN = re.compile(r"(api|cli|apply:[A-Za-z0-9_.-]{1,100})")
#: Upper bound of the JSON encoding of ``args`` plus ``kwargs``; RQ stores them in
#: every job, and a schedule is a definition, not a data transport.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DESCRIPTION_CHARS = 500
#: An alert webhook: http(s), no spaces or control characters, a sane length.
WEBHOOK_PATTERN = re.compile(r"https?://[^\s/?#]+[^\s]{0,2000}")
_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")


class Misfire(StrEnum):
    """What to do with fires that passed while no run could start."""

    COALESCE = "coalesce"  # one run stands for all missed fires
    ALL = "all"  # every missed fire runs, oldest first
    SKIP = "skip"  # none run; wait for the next future fire


class Overlap(StrEnum):
    """What to do with fires that pass while a run of the schedule is in flight (the
    misfire policy keeps deciding fires missed while no scheduler was up). One run is
    in flight at a time under each but ``allow_all``; see README "Overlap policy"."""

    SKIP = "skip"  # they go to the misfire policy at the run's end (the default)
    BUFFER_ONE = "buffer_one"  # the latest of them waits and runs next; the others are missed
    BUFFER_ALL = "buffer_all"  # each of them waits and runs, oldest first
    CANCEL_OTHER = "cancel_other"  # the newest stops the run in flight (RQ stop-job) and runs
    ALLOW_ALL = "allow_all"  # each fire its own run, up to max_concurrent in flight at once


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One schedule. Durations are whole milliseconds (``*_ms``)."""

    id: str
    target: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: One expression, or several (a tuple): the schedule fires at their union.
    cron: str | tuple[str, ...] | None = None
    every_ms: int | None = None
    timezone: str = "UTC"
    queue: str = "default"
    timeout_ms: int | None = None
    ttl_ms: int | None = None
    result_ttl_ms: int | None = None
    failure_ttl_ms: int | None = None
    description: str | None = None
    misfire: Misfire = Misfire.COALESCE
    catchup_window_ms: int | None = None
    overlap: Overlap = Overlap.SKIP
    #: Runs in flight at once under ``overlap = allow_all`` (required there, refused elsewhere).
    max_concurrent: int | None = None
    jitter_ms: int = 0
    max_attempts: int | None = None
    pause_on_failure: bool = False
    #: Where the leader POSTs this schedule's alerts (gave up, broken, paused, recovered),
    #: besides the namespace's ``rqbeat run --webhook-url``.
    webhook: str | None = None
    #: Export this schedule's own series (last success, failures, lateness): opt-in, so
    #: 100k schedules do not mean 300k series.
    metrics: bool = False
    max_queued_ms: int | None = None  # queued longer is a finding (scheduler.thresholds)
    stale_after_ms: int | None = None  # no success for longer is a finding
    owner: str = "api"
    #: The window (inclusive, ISO UTC text once validated; a time without an offset
    #: is read in ``timezone``): no fires outside; past ``end_at`` it is completed.
    start_at: str | None = None
    end_at: str | None = None
    max_runs: int | None = None  # completed after this many successful runs
    #: Dates, date ranges (``a..b``) or cron masks, in ``timezone``: fires skipped.
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._coerce()
        _check_pattern("id", self.id, ID_PATTERN, "use 1-100 of A-Z a-z 0-9 _ -")
        _check_pattern("target", self.target, TARGET_PATTERN, "must be a dotted path: pkg.module.func")
        _check_pattern("queue", self.queue, QUEUE_PATTERN, "use 1-100 of A-Z a-z 0-9 _ . : -")
        _check_pattern("owner", self.owner, OWNER_PATTERN, "must be api, cli or apply:<name>")
        if not isinstance(self.args, tuple):
            raise InvalidSchedule("args", self.args, "must be a JSON list")
        if not isinstance(self.kwargs, Mapping) or not all(isinstance(k, str) for k in self.kwargs):
            raise InvalidSchedule("kwargs", self.kwargs, "must be a JSON object with string keys")
        if self.args or self.kwargs:
            _check_payload(self.args, self.kwargs)
        _check_misfire(self.misfire)
        if not isinstance(self.overlap, Overlap):
            raise InvalidSchedule("overlap", self.overlap, f"must be one of {_OVERLAPS}")
        _check_concurrency(self.overlap, self.max_concurrent, self.max_runs)
        for name in _OPTIONAL_MS:
            value = getattr(self, name)
            if value is not None:  # most are unset: skip the call
                _check_positive_ms(name, value, optional=True)
        _check_positive_ms("jitter_ms", self.jitter_ms, optional=False, allow_zero=True)
        _check_attempts(self.max_attempts)
        windows.check_max_runs(self.max_runs)
        if not isinstance(self.pause_on_failure, bool):
            raise InvalidSchedule("pause_on_failure", self.pause_on_failure, "must be true or false")
        if not isinstance(self.metrics, bool):
            raise InvalidSchedule("metrics", self.metrics, "must be true or false")
        _check_webhook(self.webhook)
        _check_description(self.description)
        _ = self.trigger  # compiles the trigger: validates cron/every and timezone

    def _coerce(self) -> None:
        """Convenience for Python callers: lists and strings are coerced, then checked."""
        if isinstance(self.args, list):
            object.__setattr__(self, "args", tuple(self.args))
        if isinstance(self.cron, list):
            object.__setattr__(self, "cron", windows.as_crons("cron", self.cron))
        if isinstance(self.exclude, list | str):
            object.__setattr__(self, "exclude", windows.as_excludes("exclude", self.exclude))
        for name in ("start_at", "end_at"):
            object.__setattr__(self, name, windows.normal_time(name, getattr(self, name), self.timezone))
        if isinstance(self.misfire, str) and not isinstance(self.misfire, Misfire):
            object.__setattr__(self, "misfire", _as_misfire("misfire", self.misfire))
        if isinstance(self.overlap, str) and not isinstance(self.overlap, Overlap):
            object.__setattr__(self, "overlap", _as_overlap("overlap", self.overlap))

    @property
    def crons(self) -> tuple[str, ...]:
        """The cron expressions (none for an ``every`` schedule)."""
        if self.cron is None:
            return ()
        return (self.cron,) if isinstance(self.cron, str) else self.cron

    @cached_property
    def trigger(self) -> triggers.Trigger:
        """The compiled trigger; exactly one of ``cron`` and ``every_ms`` is set. With
        several crons, a window or exclusions, a :class:`~scheduler.windows.Plan`."""
        if (self.cron is None) == (self.every_ms is None):
            raise InvalidSchedule("cron", self.cron, "set exactly one of cron and every")
        triggers.load_zone(self.timezone)
        parts: list[triggers.CronTrigger | triggers.IntervalTrigger]
        if self.cron is not None:
            windows.check_crons(self.cron)
            parts = [triggers.cron_trigger(c, self.timezone, schedule_id=self.id) for c in self.crons]
        else:
            _check_positive_ms("every", self.every_ms, optional=False)
            assert self.every_ms is not None
            if self.every_ms < 1000:
                raise InvalidSchedule("every", self.every_ms, "must be at least 1s")
            parts = [triggers.interval_trigger(self.every_ms)]
        if len(parts) == 1 and self.start_at is None and self.end_at is None and not self.exclude:
            return parts[0]
        return windows.plan(
            parts,
            self.timezone,
            start_ms=windows.time_ms(self.start_at),
            end_ms=windows.time_ms(self.end_at),
            exclude=self.exclude,
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, owner: str | None = None) -> Schedule:
        """Build from user-facing keys (see :data:`USER_KEYS`); unknown keys are refused."""
        if not isinstance(raw, Mapping):
            raise InvalidSchedule("schedule", raw, "must be a table/object of settings")
        unknown = sorted(raw.keys() - USER_KEYS.keys())
        if unknown:
            key = unknown[0]
            raise InvalidSchedule(key, raw[key], f"unknown setting; expected one of {', '.join(USER_KEYS)}")
        for required in ("id", "target"):
            if required not in raw:
                raise InvalidSchedule(required, None, "is required")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name, convert = USER_KEYS[key]
            values[name] = convert(key, value)
        if owner is not None:
            values["owner"] = owner
        return cls(**values)

    def with_id(self, schedule_id: str) -> Schedule:
        """This schedule under another id, validating only what the id changes: the id
        itself, and a cron expression with ``H`` (hashed by the id) compiled anew.
        Everything else, including the memoized trigger and definition text, is shared:
        ``rqbeat apply`` builds the schedules of a file that share their settings this
        way, equal to what :meth:`from_dict` would build."""
        if self._hashed_by_id:
            return replace(self, id=schedule_id)
        _check_pattern("id", schedule_id, ID_PATTERN, "use 1-100 of A-Z a-z 0-9 _ -")
        _ = self._json  # memoized here first, so every copy shares it
        clone = object.__new__(Schedule)
        clone.__dict__.update(self.__dict__)
        clone.__dict__["id"] = schedule_id
        return clone

    @cached_property
    def _hashed_by_id(self) -> bool:
        # memoized: dispatch clones a shared decode per due schedule (scheduler.shapes)
        return any(triggers.hashed_by_id(c) for c in self.crons)

    def edited(self, changes: Mapping[str, Any]) -> Schedule:
        """A copy with some user-facing settings changed (keys and values as in
        :meth:`from_dict`; ``None`` puts a setting back to its default), validated as a
        whole. Setting ``cron`` drops ``every`` and the other way round: a schedule has
        exactly one trigger. The id and the owner are not settings one edits."""
        for key in ("id", "owner"):
            if key in changes:
                raise InvalidSchedule(key, changes[key], "cannot be changed by an edit")
        raw = self.to_dict()
        if changes.get("overlap") not in (None, Overlap.ALLOW_ALL) and "max_concurrent" not in changes:
            raw.pop("max_concurrent", None)  # leaving allow_all: its cap goes with it
        for one, other in (("cron", "every"), ("every", "cron")):
            if changes.get(one) is not None and changes.get(other) is None:
                raw.pop(other, None)
        for key, value in changes.items():
            if value is None:
                raw.pop(key, None)
            else:
                raw[key] = value
        return Schedule.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """User-facing keys with durations as text; ``from_dict(to_dict())`` round-trips."""
        out: dict[str, Any] = {}
        for name, key, omit_if, convert in _OUTPUT:
            value = getattr(self, name)
            if value is None or value == omit_if:
                continue
            out[key] = value if convert is None else convert(value)
        return out

    def to_json(self) -> str:
        """The definition's text: compact, key-sorted JSON of :meth:`stored_settings`.
        Stable text for change detection and caches; Redis holds it as one hash field
        per setting (:func:`scheduler.stored.definition_text` rebuilds this text)."""
        return self._json

    @cached_property
    def _json(self) -> str:
        # memoized: apply compares, sizes and encodes each of 100k schedules by it
        return json.dumps(self._settings, sort_keys=True, separators=(",", ":"))

    def stored_settings(self) -> dict[str, Any]:
        """What is stored (:mod:`scheduler.stored`, one hash field each): the
        user-facing settings that differ from their defaults, without the id."""
        return dict(self._settings)

    @cached_property
    def _settings(self) -> dict[str, Any]:
        # memoized for the text and the stored fields alike; never handed out itself
        data = self.to_dict()
        del data["id"]
        for key, default in _STORED_DEFAULTS.items():
            if data.get(key) == default:
                del data[key]
        return data

    @property
    def trigger_text(self) -> str:
        """The trigger as a user wrote it: the cron expression or ``every 30s``."""
        if self.cron is not None:
            return " | ".join(self.crons)
        assert self.every_ms is not None
        return f"every {format_duration(self.every_ms)}"


def _as_str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidSchedule(key, value, "must be a string")
    return value


def _as_args(key: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        value = _json_text(key, value)
    if not isinstance(value, list | tuple):
        raise InvalidSchedule(key, value, "must be a JSON list")
    return tuple(value)


def _as_kwargs(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = _json_text(key, value)
    if not isinstance(value, Mapping):
        raise InvalidSchedule(key, value, "must be a JSON object")
    return dict(value)


def _as_duration(key: str, value: Any) -> int:
    return parse_duration_ms(key, value, allow_zero=key == "jitter")


def _as_int(key: str, value: Any) -> int:
    # ASCII digits only ("²".isdigit() is true, int() refuses it), and few enough of
    # them for int() (which refuses over 4300 digits).
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSchedule(key, value, "must be a whole number")
    return value


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if not isinstance(value, bool):
        raise InvalidSchedule(key, value, "must be true or false")
    return value


def _as_misfire(key: str, value: Any) -> Misfire:
    try:
        return Misfire(value)
    except ValueError:
        choices = ", ".join(m.value for m in Misfire)
        raise InvalidSchedule(key, value, f"must be one of {choices}") from None


_OVERLAPS = ", ".join(o.value for o in Overlap)


def _as_overlap(key: str, value: Any) -> Overlap:
    try:
        return Overlap(value)
    except ValueError:
        raise InvalidSchedule(key, value, f"must be one of {_OVERLAPS}") from None


def _json_text(key: str, text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidSchedule(key, text, f"is not valid JSON: {exc}") from None


#: user-facing key → (dataclass field, converter)
USER_KEYS: dict[str, tuple[str, Any]] = {
    "id": ("id", _as_str),
    "target": ("target", _as_str),
    "args": ("args", _as_args),
    "kwargs": ("kwargs", _as_kwargs),
    "cron": ("cron", windows.as_crons),
    "every": ("every_ms", _as_duration),
    "timezone": ("timezone", _as_str),
    "queue": ("queue", _as_str),
    "timeout": ("timeout_ms", _as_duration),
    "ttl": ("ttl_ms", _as_duration),
    "result_ttl": ("result_ttl_ms", _as_duration),
    "failure_ttl": ("failure_ttl_ms", _as_duration),
    "description": ("description", _as_str),
    "misfire": ("misfire", _as_misfire),
    "catchup_window": ("catchup_window_ms", _as_duration),
    "overlap": ("overlap", _as_overlap),
    "max_concurrent": ("max_concurrent", _as_int),
    "jitter": ("jitter_ms", _as_duration),
    "max_attempts": ("max_attempts", _as_int),
    "pause_on_failure": ("pause_on_failure", _as_bool),
    "webhook": ("webhook", _as_str),
    "metrics": ("metrics", _as_bool),
    "max_queued": ("max_queued_ms", _as_duration),
    "stale_after": ("stale_after_ms", _as_duration),
    "owner": ("owner", _as_str),
    "start_at": ("start_at", windows.as_time),
    "end_at": ("end_at", windows.as_time),
    "max_runs": ("max_runs", _as_int),
    "exclude": ("exclude", windows.as_excludes),
}
#: The optional durations, checked when set.
_OPTIONAL_MS = (
    "timeout_ms",
    "ttl_ms",
    "result_ttl_ms",
    "failure_ttl_ms",
    "catchup_window_ms",
    "max_queued_ms",
    "stale_after_ms",
)
# Left out of the stored form too; from_dict restores them.
_STORED_DEFAULTS = {
    "overlap": "skip",
    "misfire": "coalesce",
    "owner": "api",
    "queue": "default",
    "timezone": "UTC",
}
_OMIT_IF_DEFAULT = {"args", "kwargs", "jitter_ms", "pause_on_failure", "metrics", "exclude"}
_NEVER = object()  # compares unequal to every value: the setting is always written


def _output_converter(name: str) -> Callable[[Any], Any] | None:
    """How :meth:`Schedule.to_dict` shows a field's value (None: as it is); chosen once
    per field, not per schedule."""
    if name.endswith("_ms"):
        return format_duration
    if name in ("args", "exclude"):
        return list
    if name == "cron":
        return _cron_output
    if name == "kwargs":
        return dict
    if name in ("misfire", "overlap"):
        return str
    return None


def _cron_output(value: str | tuple[str, ...]) -> str | list[str]:
    return list(value) if isinstance(value, tuple) else value


# (field name, user key, value left out, converter) per field, in declaration order.
_OUTPUT = [
    (
        f.name,
        f.name.removesuffix("_ms"),
        (f.default_factory() if f.default_factory is not MISSING else f.default)
        if f.name in _OMIT_IF_DEFAULT
        else _NEVER,
        _output_converter(f.name),
    )
    for f in fields(Schedule)
]


def _check_pattern(name: str, value: Any, pattern: re.Pattern[str], reason: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidSchedule(name, value, reason)


def _check_payload(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for name, value in (("args", list(args)), ("kwargs", dict(kwargs))):
        if not value:
            continue
        try:
            encoded = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            # repr() of a too-deep value would raise RecursionError again in the message
            shown = "<nested too deeply>" if isinstance(exc, RecursionError) else value
            raise InvalidSchedule(name, shown, f"must be JSON-serialisable: {exc}") from None
        try:  # a lone surrogate passes json.dumps but no UTF-8 stream: refuse it here,
            # not when `rqbeat add --json` echoes it back after the write
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidSchedule(name, value, "must be valid Unicode text (a lone surrogate)") from None
        if len(encoded.encode()) > MAX_PAYLOAD_BYTES:
            raise InvalidSchedule(
                name,
                f"<{len(encoded)} bytes>",
                f"must be at most {MAX_PAYLOAD_BYTES} bytes as JSON",
            )


def _check_misfire(value: Any) -> None:
    if not isinstance(value, Misfire):
        raise InvalidSchedule("misfire", value, "must be one of coalesce, all, skip")


def _check_positive_ms(name: str, value: Any, *, optional: bool, allow_zero: bool = False) -> None:
    key = name.removesuffix("_ms")
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSchedule(key, value, "must be a whole number of milliseconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidSchedule(key, value, "must be greater than zero")


def _check_attempts(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise InvalidSchedule("max_attempts", value, "must be a whole number from 1 to 1000")


#: The most runs of one schedule ``allow_all`` keeps in flight at once.
MAX_CONCURRENT = 1_000


def _check_concurrency(overlap: Overlap, max_concurrent: Any, max_runs: Any) -> None:
    """``max_concurrent`` belongs to ``allow_all`` and ``allow_all`` needs it: there is no
    sensible default cap for runs of one schedule piling up behind a slow job."""
    if overlap is not Overlap.ALLOW_ALL:
        if max_concurrent is not None:
            raise InvalidSchedule(
                "max_concurrent", max_concurrent, f"needs overlap = allow_all (overlap is {overlap})"
            )
        return
    if max_concurrent is None:
        raise InvalidSchedule("max_concurrent", None, "is required with overlap = allow_all")
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
        raise InvalidSchedule("max_concurrent", max_concurrent, "must be a whole number")
    if not 1 <= max_concurrent <= MAX_CONCURRENT:
        raise InvalidSchedule("max_concurrent", max_concurrent, f"must be from 1 to {MAX_CONCURRENT}")
    if max_runs is not None:
        # runs of allow_all end in any order: "the N-th success" would not name one fire
        raise InvalidSchedule("max_runs", max_runs, "cannot be combined with overlap = allow_all")


def _check_description(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_CHARS:
        raise InvalidSchedule(
            "description", value, f"must be text of at most {MAX_DESCRIPTION_CHARS} characters"
        )
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs") for c in value):
        raise InvalidSchedule("description", value, "must not contain control characters or surrogates")


def _check_webhook(value: Any) -> None:
    if value is None:
        return
    _check_pattern("webhook", value, WEBHOOK_PATTERN, "must be an http:// or https:// URL")
