"""Backfill: run every fire of a past window once, oldest first. Pure parts.

A backfill of schedule ``s`` over ``[from, to)`` lives in ``<ns>:backfill:<s>`` (a
hash: window, cursor, run in flight, counts) and ``<ns>:backfills`` (a zset: when the
leader next looks at it), apart from the schedule's live state, so the live fires
go on meanwhile. The leader dispatches one fire at a time per backfill, through the
same fenced write as a live fire; the cursor (``after_ms``: every fire up to it is
done) moves only when the run is acked (stamp after ack). A new leader finds the
cursor and the run in flight in Redis, so a leader change neither loses nor repeats
a fire.

Fires that already ran to success are skipped unless forced. What succeeded is kept
per schedule in ``<ns>:succeeded:<s>`` as chains of consecutive fires (see
:data:`scheduler.lua.backfills.RECORD_SUCCESS_LUA`): one member for a schedule that
never missed a fire, a few more per gap. The history stream is no record of this:
it keeps the last ~100 events, a few minutes of an every-second schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler import cron
from scheduler.clock import iso
from scheduler.errors import InvalidSchedule, RqbeatError
from scheduler.protocol import BackfillOverlap, BackfillState
from scheduler.records import text

#: The most fires one backfill may run: a window wider than this is refused.
MAX_FIRES = 10_000


class BadWindow(RqbeatError, ValueError):
    """A backfill window that cannot be run: nothing was written."""


class BackfillActive(RqbeatError):
    """The schedule has a backfill still running: nothing was written."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__(
            f"schedule {schedule_id!r} has a backfill running; see `rqbeat backfill --status "
            f"{schedule_id}`, or stop it with `rqbeat backfill --cancel {schedule_id}`"
        )


def window_fires(
    trigger: cron.Trigger, from_ms: int, to_ms: int, now_ms: int, cap: int = MAX_FIRES
) -> list[int]:
    """The fires in ``[from_ms, to_ms)``, ascending; raises :class:`BadWindow` when the
    window is empty, reaches past ``now_ms``, or holds more than ``cap`` fires."""
    if from_ms >= to_ms:
        raise BadWindow(f"--from ({iso(from_ms)}) must be before --to ({iso(to_ms)})")
    if to_ms > now_ms:
        raise BadWindow(
            f"--to ({iso(to_ms)}) is in the future (now {iso(now_ms)}): a backfill runs past fires only"
        )
    fires = cron.fires_between(trigger, from_ms - 1, to_ms - 1, cap + 1)
    if len(fires) > cap:
        raise BadWindow(
            f"the window holds more than {cap:,} fires (the 10,001st is at {iso(fires[-1])}); "
            "backfill it in smaller windows"
        )
    if not fires:
        raise BadWindow(f"no fire of the schedule falls in [{iso(from_ms)}, {iso(to_ms)})")
    return fires


def parse_time(option: str, value: str, tz: str) -> int:
    """An ISO time typed by a person (``--from``, the dashboard's form), epoch ms;
    without an offset it is a wall time in the schedule's zone ``tz``. Raises
    :class:`~scheduler.errors.InvalidSchedule` naming ``option``."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSchedule(
            option,
            value,
            "must be an ISO time, e.g. 2026-12-01T00:00:00Z or 2026-12-01 (the schedule's zone)",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=cron.load_zone(tz))
    return cron.datetime_to_ms(moment)


Chain = tuple[int, int]  # first and last fire of a run of succeeded fires, epoch ms


def parse_chains(members: Iterable[Any]) -> list[Chain]:
    """The ``<first>:<last>:<next>`` members of ``<ns>:succeeded:<id>``; damaged ones
    are ignored (a backfill then runs that fire: at least once beats never)."""
    out = []
    for member in members:
        parts = str(text(member)).split(":")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            out.append((int(parts[0]), int(parts[1])))
    return out


def succeeded(fire_ms: int, chains: Iterable[Chain]) -> bool:
    """Whether ``fire_ms`` lies in one of the chains of succeeded fires."""
    return any(first <= fire_ms <= last for first, last in chains)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a backfill of a window runs: its fires, and those it skips (succeeded)."""

    schedule_id: str
    from_ms: int
    to_ms: int
    fires: tuple[int, ...]
    skipped: tuple[int, ...]
    force: bool
    overlap: BackfillOverlap

    @property
    def to_run(self) -> list[int]:
        skipped = set(self.skipped)
        return [f for f in self.fires if f not in skipped]


def plan(
    schedule_id: str,
    fires: list[int],
    chains: list[Chain],
    *,
    from_ms: int,
    to_ms: int,
    force: bool,
    overlap: BackfillOverlap,
) -> Plan:
    """Pure: which of ``fires`` a backfill runs and which it skips."""
    skipped = () if force else tuple(f for f in fires if succeeded(f, chains))
    return Plan(schedule_id, from_ms, to_ms, tuple(fires), skipped, force, overlap)


@dataclass(frozen=True, slots=True)
class Next:
    """The leader's next move for a backfill with no run in flight."""

    fire_ms: int | None  # the fire to dispatch; None: nothing to dispatch in this step
    after_ms: int  # the cursor once the skipped fires are passed over
    skipped: int
    done: bool  # no fire left in the window


def next_fire(
    trigger: cron.Trigger, after_ms: int, to_ms: int, chains: list[Chain], *, force: bool, limit: int = 1_000
) -> Next:
    """Pure: the first fire after the cursor that is not to be skipped, passing over at
    most ``limit`` skipped ones per call (the next step goes on from there)."""
    fires = cron.fires_between(trigger, after_ms, to_ms - 1, limit + 1)
    skipped, cursor = 0, after_ms
    for fire in fires[:limit]:
        if force or not succeeded(fire, chains):
            return Next(fire, cursor, skipped, done=False)
        skipped, cursor = skipped + 1, fire
    return Next(None, cursor, skipped, done=len(fires) <= limit)


def job_id(schedule_id: str, fire_ms: int, attempt: int) -> str:
    """A backfill run's RQ job id: apart from the live runs' ``<id>-<fire>-<attempt>``."""
    return f"{schedule_id}-bf-{fire_ms}-{attempt}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """A backfill as its hash records it."""

    schedule_id: str
    state: BackfillState
    from_ms: int
    to_ms: int
    after_ms: int
    total: int
    succeeded: int
    skipped: int
    failed: int
    overlap: BackfillOverlap
    force: bool
    attempt: int
    job_id: str | None
    fire_ms: int | None
    created_at: str
    finished_at: str
    by: str
    error: str
    last_error: str

    @property
    def finished(self) -> int:
        return self.succeeded + self.skipped + self.failed

    @classmethod
    def of(cls, schedule_id: str, raw: Mapping[Any, Any]) -> Status:
        """From HGETALL; raises ValueError for a damaged hash."""
        f = {str(text(k)): str(text(v)) for k, v in raw.items()}

        def num(name: str) -> int:
            return int(f.get(name) or 0)

        return cls(
            schedule_id=schedule_id,
            state=BackfillState(f["state"]),
            from_ms=num("from_ms"),
            to_ms=num("to_ms"),
            after_ms=num("after_ms"),
            total=num("total"),
            succeeded=num("succeeded"),
            skipped=num("skipped"),
            failed=num("failed"),
            overlap=BackfillOverlap(f.get("overlap") or BackfillOverlap.ALLOW),
            force=f.get("force") == "1",
            attempt=num("attempt") or 1,
            job_id=f.get("job_id") or None,
            fire_ms=int(f["fire_ms"]) if f.get("fire_ms") else None,
            created_at=f.get("created_at", ""),
            finished_at=f.get("finished_at", ""),
            by=f.get("by", ""),
            error=f.get("error", ""),
            last_error=f.get("last_error", ""),
        )

    def line(self) -> str:
        """One line of progress: ``backfill nightly: 40/100 fires (38 ran, 2 skipped, 0 failed), active``."""
        where = f", running {iso(self.fire_ms)}" if self.fire_ms is not None and self.job_id else ""
        why = f" ({self.error})" if self.error else ""
        return (
            f"backfill {self.schedule_id} [{iso(self.from_ms)}, {iso(self.to_ms)}): "
            f"{self.finished}/{self.total} fires ({self.succeeded} ran, {self.skipped} skipped, "
            f"{self.failed} failed), {self.state}{where}{why}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "schedule": self.schedule_id,
            "state": str(self.state),
            "from": iso(self.from_ms),
            "to": iso(self.to_ms),
            "fires": self.total,
            "succeeded": self.succeeded,
            "skipped": self.skipped,
            "failed": self.failed,
            "overlap": str(self.overlap),
            "force": self.force,
            "cursor": iso(self.after_ms) if self.after_ms >= self.from_ms else None,
            "in_flight": None
            if self.job_id is None
            else {"job_id": self.job_id, "fire_at": iso(self.fire_ms or 0), "attempt": self.attempt},
            "created_at": self.created_at,
            "finished_at": self.finished_at or None,
            "by": self.by,
            "error": self.error or None,
            "last_error": self.last_error or None,
        }
