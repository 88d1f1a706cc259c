"""Durations as users write them: ``90``, ``"90"``, ``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``,
or combined, ``"1h30m"``. Parsed to whole milliseconds so the rest of the code
never handles floats of seconds."""

from __future__ import annotations

import math
import re

from scheduler.errors import InvalidSchedule

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
#: Anything longer than this is a typo, not a schedule (about 10 years).
MAX_DURATION_MS = 10 * 366 * 86_400_000


def parse_duration_ms(field: str, value: object, *, allow_zero: bool = False) -> int:
    """Milliseconds for a duration given as seconds (int/float) or a string with units.

    Raises :class:`InvalidSchedule` naming ``field`` for anything else: booleans,
    negative, zero (unless ``allow_zero``), NaN, infinite, unknown units, values
    over ten years.
    """
    if isinstance(value, bool):
        raise InvalidSchedule(field, value, "a duration must be a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        ms = _seconds_to_ms(field, value)
    elif isinstance(value, str):
        ms = _parse_text(field, value)
    else:
        raise InvalidSchedule(field, value, "a duration must be a number of seconds or a string like '30s'")
    if ms < 0 or (ms == 0 and not allow_zero):
        raise InvalidSchedule(field, value, "must be greater than zero")
    if ms > MAX_DURATION_MS:
        raise InvalidSchedule(field, value, "must be at most 10 years")
    return ms


def format_duration(ms: int) -> str:
    """The shortest readable form: ``90_000`` → ``"1m30s"``; inverse of the parser."""
    if ms == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNIT_MS[unit]
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _seconds_to_ms(field: str, seconds: float) -> int:
    # math.isfinite() of an int too large for a float raises OverflowError; ints are
    # finite anyway, and the range check below compares them exactly.
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise InvalidSchedule(field, seconds, "must be a finite number of seconds")
    if abs(seconds) > MAX_DURATION_MS / 1000:
        raise InvalidSchedule(field, seconds, "must be at most 10 years")
    return round(seconds * 1000)


def _parse_text(field: str, text: str) -> int:
    cleaned = text.strip().lower().replace(" ", "")
    try:
        seconds = float(cleaned)
    except ValueError:
        seconds = None
    if seconds is not None:
        return _seconds_to_ms(field, seconds)
    if not _WHOLE.fullmatch(cleaned):
        raise InvalidSchedule(
            field, text, "not a duration; write seconds or e.g. '30s', '10m', '2h', '1d', '1h30m'"
        )
    total = sum(float(n) * _UNIT_MS[unit] for n, unit in _PART.findall(cleaned))
    if total > MAX_DURATION_MS:
        raise InvalidSchedule(field, text, "must be at most 10 years")
    return round(total)
