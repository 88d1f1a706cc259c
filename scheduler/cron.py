"""When a schedule fires: cron and interval triggers as pure functions of epoch ms.

Nothing else in rqbeat imports croniter. Every instant here is an integer count of
milliseconds since the Unix epoch (``*_ms``); nothing reads the clock or Redis.

Cron syntax: 5 fields (minute hour day-of-month month day-of-week), or 6 with the
seconds field *first* (Quartz / Sidekiq order). Aliases ``@yearly @annually @monthly
@weekly @daily @midnight @hourly``; croniter's ``L``, ``W`` and ``#`` (plus Quartz
``5L`` for "last Friday"). When both day fields are restricted a day matching
either one fires, as in Vixie cron. ``H`` is a value hashed from the schedule id,
stable across processes: ``H``, ``H(a-b)``, ``H/n``, ``H(a-b)/n``, each a whole
field; a bare ``H`` in day-of-month picks from 1-28 so that every month has it.
An equal range ``5-5`` means just 5, and croniter's random ``R`` is refused.

DST: cron expressions name *local wall-clock* times in the trigger's IANA zone.
croniter walks naive wall times (calendar arithmetic only) and each matching wall
time is mapped to the instants at which it happens:

* a wall time skipped by a spring-forward gap fires at the first instant after the
  gap (the transition: 02:30 in Berlin fires at 03:00 CEST). All skipped wall times
  collapse into that one fire, which is also the fire of a wall time matching the end
  of the gap, so no two fires ever share an instant;
* a wall time repeated by a fall-back fold fires once, in the first pass, unless the
  hour field is interval-like (starts with ``*`` or is ``H/n``; ``@hourly`` counts):
  then it fires in both passes and ``*/15 * * * *`` keeps 15 real minutes.

So a daily ``30 2 * * *`` fires exactly once on both transition days. This assumes
a zone's transitions lie further apart than the hour they shift, as in every IANA
zone. Interval triggers are plain epoch arithmetic from a fixed origin: DST never
touches them and restarts never drift them.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice, takewhile
from typing import Protocol, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from scheduler.errors import InvalidSchedule

__all__ = [
    "CronTrigger",
    "IntervalTrigger",
    "Trigger",
    "cron_trigger",
    "interval_trigger",
    "load_zone",
    "next_fire_ms",
    "fires_between",
    "next_fires",
    "describe",
    "ms_to_datetime",
    "datetime_to_ms",
    "PlannedTrigger",
    "NEVER_MS",
    "wall_matches",
    "first_match_after",
    "hashed_by_id",
]

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS = dict(zip(_FIELDS, [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)], strict=True))
_HASHED = re.compile(r"H(?:\((?P<lo>\d+)-(?P<hi>\d+)\))?(?:/(?P<step>\d+))?", re.I | re.A)
_RANDOM = re.compile(r"R(?:\(\d+-\d+\))?(?:/\d+)?", re.I | re.A)
_QUARTZ_LAST_DOW = re.compile(r"([0-7])L", re.I | re.A)
_HAS_H = re.compile(r"h", re.I)
_EQUAL_RANGE = re.compile(r"(?<![\d#])(\d+)-\1(?:/\d+)?(?![\d#])", re.A)

#: "No more fires" (a window that ended, :mod:`scheduler.windows`): 9999-12-31T23:59:59Z,
#: still a valid ISO time and a finite score. :func:`next_fires` and
#: :func:`fires_between` stop there.
NEVER_MS = 253_402_300_799_000

# Wall-clock arithmetic is deliberately naive: these never leave this module.
_NAIVE_EPOCH = datetime(1970, 1, 1, tzinfo=UTC).replace(tzinfo=None)
_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """A validated cron expression in an IANA zone; build it with :func:`cron_trigger`."""

    expr: str
    tz: str = "UTC"
    schedule_id: str = field(default="", kw_only=True, compare=False, repr=False)
    _resolved: str = field(init=False, repr=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _interval_hours: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", load_zone(self.tz))
        if not isinstance(self.expr, str):
            raise InvalidSchedule("cron", self.expr, "must be a string")
        # The id only matters to H fields; keyed without it, schedules sharing an
        # expression share one cache entry (a batch computes each expression once).
        hashed_by = self.schedule_id if _HAS_H.search(self.expr) else ""
        resolved, interval_hours = _prepare(self.expr, hashed_by)
        try:
            _compile(resolved)
        except CroniterBadDateError:
            raise InvalidSchedule("cron", self.expr, "never fires") from None
        except (ValueError, LookupError) as exc:  # croniter's errors are ValueErrors
            reason = (str(exc).strip().splitlines() or [repr(exc)])[-1]
            raise InvalidSchedule("cron", self.expr, reason) from None
        object.__setattr__(self, "_resolved", resolved)
        object.__setattr__(self, "_interval_hours", interval_hours)

    @property
    def repeats_in_fold(self) -> bool:
        """Fires in both passes of a fall-back fold (the hour field is interval-like)."""
        return self._interval_hours


@dataclass(frozen=True, slots=True)
class IntervalTrigger:
    """Fires at ``origin_ms + k * every_ms`` for every integer ``k``."""

    every_ms: int
    origin_ms: int = 0

    def __post_init__(self) -> None:
        for value in (self.every_ms, self.origin_ms):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidSchedule("every", value, "must be a whole number of milliseconds")
        if self.every_ms <= 0:
            raise InvalidSchedule("every", self.every_ms, "must be positive")


class PlannedTrigger(Protocol):
    """A trigger built from others (:class:`scheduler.windows.Plan`: several crons,
    a window, exclusions), answering the same questions."""

    def next_after_ms(self, after_ms: int) -> int: ...

    def describe(self) -> str: ...


Trigger = CronTrigger | IntervalTrigger | PlannedTrigger


def cron_trigger(expr: str, tz: str = "UTC", *, schedule_id: str = "") -> CronTrigger:
    """Validate and compile ``expr``; ``H`` fields are hashed from ``schedule_id``."""
    if isinstance(expr, str) and isinstance(tz, str) and not _HAS_H.search(expr):
        return _shared_trigger(expr, tz)
    return CronTrigger(expr, tz, schedule_id=schedule_id)


def hashed_by_id(expr: str) -> bool:
    """Whether ``expr`` has ``H`` fields, whose values come from the schedule's id."""
    return bool(_HAS_H.search(expr))


@lru_cache(maxsize=4096)
def _shared_trigger(expr: str, tz: str) -> CronTrigger:
    # Without H the id changes nothing (it is neither compared nor shown): schedules
    # sharing an expression and a zone share one validated, immutable trigger, so a
    # file of 100k schedules validates each of its expressions once.
    return CronTrigger(expr, tz)


def interval_trigger(every_ms: int, origin_ms: int = 0) -> IntervalTrigger:
    """An interval trigger anchored at ``origin_ms`` (default: the Unix epoch)."""
    return IntervalTrigger(every_ms, origin_ms)


def load_zone(tz: str) -> ZoneInfo:
    """The IANA zone ``tz``; ``localtime`` is refused, as it differs between hosts."""
    if isinstance(tz, str) and tz and tz != "localtime":
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InvalidSchedule("timezone", tz, "unknown IANA timezone")


def next_fire_ms(trigger: Trigger, after_ms: int) -> int:
    """The first fire strictly after ``after_ms``."""
    if isinstance(trigger, IntervalTrigger):
        periods = (after_ms - trigger.origin_ms) // trigger.every_ms + 1
        return trigger.origin_ms + periods * trigger.every_ms
    if isinstance(trigger, CronTrigger):
        return _next_cron_ms(trigger, after_ms)
    return trigger.next_after_ms(after_ms)


def fires_between(trigger: Trigger, after_ms: int, until_ms: int, limit: int) -> list[int]:
    """Fires in ``(after_ms, until_ms]``, ascending, at most ``limit`` of them."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return list(islice(takewhile(lambda t: t <= until_ms, _fires(trigger, after_ms)), limit))


def next_fires(trigger: Trigger, after_ms: int, n: int) -> list[int]:
    """The next ``n`` fires strictly after ``after_ms``, ascending."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(islice(_fires(trigger, after_ms), n))


def describe(trigger: Trigger) -> str:
    """Short human text: ``cron '30 2 * * *' Europe/Berlin`` or ``every 30s``."""
    if isinstance(trigger, IntervalTrigger):
        text = f"every {_format_ms(trigger.every_ms)}"
        if trigger.origin_ms:
            text += f" from {ms_to_datetime(trigger.origin_ms).isoformat()}"
        return text
    if not isinstance(trigger, CronTrigger):
        return trigger.describe()
    text = f"cron {trigger.expr!r} {trigger.tz}"
    if trigger._resolved != " ".join(trigger.expr.split()):
        text += f" (as {trigger._resolved!r})"
    return text


def ms_to_datetime(ms: int, tz: str = "UTC") -> datetime:
    """The aware datetime of an epoch-ms instant, in zone ``tz``."""
    # the sum is taken in UTC: wall-clock arithmetic on an aware datetime would drop
    # the fold and name the first pass of a repeated hour for an instant of the second
    utc = datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)
    return utc.astimezone(load_zone(tz))


def datetime_to_ms(moment: datetime) -> int:
    """Epoch ms of an aware datetime; a naive one is refused, it names no instant."""
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} names no instant")
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def wall_matches(trigger: CronTrigger, wall: datetime) -> bool:
    """Whether a naive local wall time, cut to the expression's unit (the second for
    6 fields, else the minute), matches the expression: its use as a mask."""
    unit = _SECOND if len(trigger._resolved.split()) == 6 else timedelta(minutes=1)
    cut = wall - (wall - _NAIVE_EPOCH) % unit
    return _step(trigger, cut - _SECOND) == cut


def first_match_after(trigger: CronTrigger, wall: datetime) -> datetime:
    """The first naive wall time strictly after ``wall`` that the expression names
    (before any DST mapping: it may not exist, or exist twice, in the zone)."""
    return _step(trigger, wall)


def _fires(trigger: Trigger, after_ms: int) -> Iterator[int]:
    while True:
        after_ms = next_fire_ms(trigger, after_ms)
        if after_ms >= NEVER_MS:
            return
        yield after_ms


def _format_ms(ms: int) -> str:
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        parts += [f"{count}{unit}"] if count else []
    return "".join(parts)


# -- compiling -------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _prepare(expr: str, schedule_id: str) -> tuple[str, bool]:
    """Resolve aliases and ``H``: (plain expression, hour field interval-like)."""
    fields = _split(expr)
    names = _FIELDS if len(fields) == 6 else _FIELDS[1:]
    resolved = []
    for name, token in zip(names, fields, strict=True):
        if any(_RANDOM.fullmatch(item) for item in token.split(",")):
            raise InvalidSchedule("cron", expr, f"random 'R' in {name} is not stable; use 'H'")
        plain = _resolve_hash(expr, name, token, schedule_id)
        if name == "day-of-week":
            plain = _QUARTZ_LAST_DOW.sub(r"L\1", plain)
        # croniter reads an equal range "5-5" as the whole field; cron means just 5.
        plain = _EQUAL_RANGE.sub(r"\1", plain)
        _check_values(expr, name, plain)
        resolved.append(plain)
    hour = fields[names.index("hour")]
    interval_hours = hour.startswith("*") or re.fullmatch(r"H/\d+", hour, re.I) is not None
    return " ".join(resolved), interval_hours


def _split(expr: str) -> list[str]:
    text = expr.strip()
    if not text:
        raise InvalidSchedule("cron", expr, "empty expression")
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise InvalidSchedule("cron", expr, "@reboot is not a schedule; not supported")
        if text.lower() not in _ALIASES:
            known = " ".join(_ALIASES)
            raise InvalidSchedule("cron", expr, f"unknown alias; expected one of {known}")
        text = _ALIASES[text.lower()]
    fields = text.split()
    if len(fields) not in (5, 6):
        reason = f"expected 5 fields (or 6 with seconds first), got {len(fields)}"
        raise InvalidSchedule("cron", expr, reason)
    return fields


def _resolve_hash(expr: str, name: str, token: str, schedule_id: str) -> str:
    """``token`` with an ``H`` form replaced by a plain value, range or step."""
    match = _HASHED.fullmatch(token)
    if match is None:
        if any(_HASHED.fullmatch(item) for item in token.split(",")):
            raise InvalidSchedule("cron", expr, f"H must be the whole {name} field")
        return token
    lo, hi = _BOUNDS[name]
    hi = 6 if name == "day-of-week" else hi  # 7 is Sunday again
    if match["lo"] is not None:
        lo, hi = int(match["lo"]), int(match["hi"])
        if not _BOUNDS[name][0] <= lo <= hi <= _BOUNDS[name][1]:
            raise InvalidSchedule("cron", expr, f"bad H range {lo}-{hi} for {name}")
    elif match["step"] is None and name == "day-of-month":
        hi = 28
    digest = zlib.crc32(f"{schedule_id}\x00{name}".encode())
    if match["step"] is None:
        return str(lo + digest % (hi - lo + 1))
    step = int(match["step"])
    if step == 0:
        raise InvalidSchedule("cron", expr, f"step 0 in {name}")
    first = lo + digest % min(step, hi - lo + 1)
    return f"{first}-{hi}/{step}"


def _check_values(expr: str, name: str, token: str) -> None:
    """Name the field of an out-of-range number, which croniter does not."""
    lo, hi = _BOUNDS[name]
    for item in token.split(","):
        values, _, step = item.partition("/")
        if step.isascii() and step.isdigit() and int(step) == 0:
            raise InvalidSchedule("cron", expr, f"step 0 in {name}")
        for part in values.split("-"):
            if part.isascii() and part.isdigit() and not lo <= int(part) <= hi:
                raise InvalidSchedule("cron", expr, f"{name} value {part} not in {lo}-{hi}")


@lru_cache(maxsize=4096)  # one entry per distinct resolved expression; H makes them many
def _compile(resolved: str) -> tuple[croniter[datetime], threading.Lock]:
    """A croniter over naive wall times, checked to fire at least once.

    A croniter instance is mutable (it keeps a cursor), hence the lock."""
    seconds_first = len(resolved.split()) == 6
    it = croniter(resolved, _NAIVE_EPOCH, ret_type=datetime, second_at_beginning=seconds_first)
    it.get_next()  # raises CroniterBadDateError for "0 0 30 2 *" and the like
    return it, threading.Lock()


def _step(trigger: CronTrigger, wall: datetime) -> datetime:
    """The first matching wall time strictly after ``wall``."""
    it, lock = _compile(trigger._resolved)
    try:
        with lock:
            return it.get_next(datetime, start_time=wall)
    except CroniterBadDateError:
        reason = f"no fire within 50 years after {wall.isoformat()}"
        raise InvalidSchedule("cron", trigger.expr, reason) from None


# -- wall time to instants ---------------------------------------------------------


@lru_cache(maxsize=16_384)
def _next_cron_ms(trigger: CronTrigger, after_ms: int) -> int:
    """Memoized: a burst of schedules sharing (expression, zone) and the same pending
    fire asks the same question thousands of times; croniter answers it once."""
    zone = trigger._zone
    after_s, frac_ms = divmod(after_ms, 1000)
    offset = _instant_offset_s(zone, after_s)
    wall = _NAIVE_EPOCH + timedelta(seconds=after_s + offset, milliseconds=frac_ms)
    first_off, second_off = _wall_offsets_s(zone, wall)
    if first_off == second_off:
        # First-pass instants rise with wall time, so one step is exact; and any
        # second pass at or before an unambiguous ``wall`` is already over.
        return _instants(trigger, _step(trigger, wall))[0] * 1000
    fold_s = first_off - second_off
    if offset == first_off:
        return _next_in_first_pass(trigger, wall, after_ms, fold_s, second_off)
    return _next_in_second_pass(trigger, wall, after_ms, fold_s, second_off)


def _next_in_first_pass(
    trigger: CronTrigger, wall: datetime, after_ms: int, fold_s: int, second_off: int
) -> int:
    """``after`` is in a fold's first pass: the second pass of an interval-like hour
    (wall times up to ``wall`` included) may come before the next first-pass fire."""
    best = _instants(trigger, _step(trigger, wall))[0]
    if not trigger._interval_hours:
        return best * 1000
    after_s = after_ms // 1000
    transition_s = _transition_s(trigger._zone, after_s, after_s + fold_s)
    fold_start = _NAIVE_EPOCH + timedelta(seconds=transition_s + second_off)
    start = max(wall - timedelta(seconds=fold_s), fold_start - _MICROSECOND)
    last = _instants(trigger, _step(trigger, start))[1]
    return min(best, last) * 1000 if last * 1000 > after_ms else best * 1000


def _next_in_second_pass(
    trigger: CronTrigger, wall: datetime, after_ms: int, fold_s: int, second_off: int
) -> int:
    """``after`` is in a fold's second pass, where only interval-like hours fire."""
    first, last = _instants(trigger, _step(trigger, wall))
    if first * 1000 > after_ms:
        return first * 1000
    if last * 1000 > after_ms:
        return last * 1000
    # A fixed-hour wall time in the fold fired in the first pass: resume at the fold's end.
    after_s = after_ms // 1000
    transition_s = _transition_s(trigger._zone, after_s - fold_s, after_s)
    fold_end = _NAIVE_EPOCH + timedelta(seconds=transition_s + second_off + fold_s)
    return _instants(trigger, _step(trigger, fold_end - _MICROSECOND))[0] * 1000


def _instants(trigger: CronTrigger, wall: datetime) -> tuple[int, int]:
    """Epoch seconds of the first and the last fire of a matching wall time."""
    zone = trigger._zone
    local_s = (wall - _NAIVE_EPOCH) // _SECOND
    first_off, second_off = _wall_offsets_s(zone, wall)
    if first_off == second_off:
        return local_s - first_off, local_s - first_off
    if first_off < second_off:  # in a gap: fire as the gap ends
        transition_s = _transition_s(zone, local_s - second_off, local_s - first_off)
        return transition_s, transition_s
    first = local_s - first_off
    return first, (local_s - second_off if trigger._interval_hours else first)


def _wall_offsets_s(zone: ZoneInfo, wall: datetime) -> tuple[int, int]:
    """UTC offsets of a (fold=0) wall time read as first and as second pass.

    Equal for most wall times; first > second in a fold, first < second in a gap."""
    first = cast(timedelta, zone.utcoffset(wall))
    second = cast(timedelta, zone.utcoffset(wall.replace(fold=1)))
    return first // _SECOND, second // _SECOND


def _instant_offset_s(zone: ZoneInfo, epoch_s: int) -> int:
    return cast(timedelta, datetime.fromtimestamp(epoch_s, zone).utcoffset()) // _SECOND


def _transition_s(zone: ZoneInfo, lo_s: int, hi_s: int) -> int:
    """The first second in ``(lo_s, hi_s]`` whose UTC offset differs from ``lo_s``'s."""
    before = _instant_offset_s(zone, lo_s)
    while hi_s - lo_s > 1:
        mid_s = (lo_s + hi_s) // 2
        if _instant_offset_s(zone, mid_s) == before:
            lo_s = mid_s
        else:
            hi_s = mid_s
    return hi_s
