"""The one exception tree of rqbeat.

Every error rqbeat raises on purpose is an :class:`RqbeatError`. Errors caused by
the caller's input also derive from :class:`ValueError`, so generic code that
catches bad values keeps working; the CLI maps them to exit code 2.
"""

from __future__ import annotations

from typing import Any


class RqbeatError(Exception):
    """Root of every error rqbeat raises on purpose."""


class InvalidSchedule(RqbeatError, ValueError):
    """A schedule definition was refused; nothing was written.

    Carries the offending ``field``, the ``value`` as given and the ``reason``,
    so a caller can point at the exact input that is wrong.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(_message(field, value, reason))


class ScheduleNotFound(RqbeatError, LookupError):
    """No schedule with this id exists."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"no schedule with id {schedule_id!r}")


class StaleVersion(RqbeatError):
    """A compare-and-set write found another version than the one it was based on:
    someone created, changed or removed the schedule meanwhile. Nothing was written;
    re-reading and deciding again is safe. ``found`` 0 means there is no schedule."""

    def __init__(self, schedule_id: str, expected: int, found: int, message: str = "") -> None:
        self.schedule_id = schedule_id
        self.expected = expected
        self.found = found
        super().__init__(
            message
            or f"schedule {schedule_id!r} changed meanwhile (version {found}, expected {expected});"
            " nothing was written"
        )


class ScheduleExists(StaleVersion):
    """A create found the id taken (``found`` is the existing version)."""

    def __init__(self, schedule_id: str, found: int) -> None:
        super().__init__(schedule_id, 0, found, f"schedule {schedule_id!r} already exists (version {found})")


class ConfigError(RqbeatError, ValueError):
    """A setting (flag, environment variable) has an invalid value."""

    def __init__(self, setting: str, value: Any, reason: str) -> None:
        self.setting = setting
        self.value = value
        self.reason = reason
        super().__init__(_message(setting, value, reason))


class LeadershipLost(RqbeatError):
    """This replica is no longer the leader; it must stop dispatching at once."""


class ScheduleConflict(RqbeatError):
    """A schedule kept changing under an upsert (another writer); try again."""


class CorruptDefinition(RqbeatError, ValueError):
    """A definition stored in Redis cannot be used (not JSON, not an object, another
    id, an invalid setting). The schedule is shown and marked broken, never raised
    past the one schedule it concerns. The message is the ``reason`` alone: it is what
    the schedule's ``error`` field records, next to its id."""

    def __init__(self, schedule_id: str, reason: str) -> None:
        self.schedule_id = schedule_id
        self.reason = reason
        super().__init__(reason)


class CorruptJobMeta(RqbeatError, ValueError):
    """An RQ job's ``meta["rqbeat"]`` cannot be read (written by hand, or damaged)."""


def _message(field: str, value: Any, reason: str) -> str:
    # The field (a TOML key, a table name) and the reason (a parser's words, which may
    # quote the input) can carry newlines or terminal escapes: the message stays one
    # printable line, safe to print and to log.
    return f"{_clip(_printable(str(field)), 120)}: {_clip(_printable(reason), 500)} (got {_show(value)})"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _printable(text: str) -> str:
    """``text`` with every non-printable character escaped as in a Python literal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show(value: Any, limit: int = 80) -> str:
    """A short, single-line rendering of a bad value for an error message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of over 4300 digits; a too-deep nest
        text = f"<{type(value).__name__}>"
    return _clip(_printable(text), limit)


class RedisFull(RqbeatError):
    """Redis refused a write because it is at ``maxmemory`` (``OOM``).

    Scripts declare their flags, so Redis refuses a whole script before it runs:
    ``what`` was not written at all (``written`` says what an earlier step of the
    same command did write, e.g. the first chunks of an apply)."""

    def __init__(self, what: str, written: str = "nothing was written") -> None:
        self.what = what
        self.written = written
        super().__init__(
            f"Redis is out of memory (used_memory reached maxmemory): {what} was refused, {written}; "
            "free memory in Redis or raise its maxmemory, then run it again"
        )
