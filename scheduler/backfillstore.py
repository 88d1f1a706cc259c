"""Starting, reading and canceling a backfill (``Client.backfill`` and friends; the
CLI and the dashboard both call these). Every refusal is raised before anything is
written; the start itself is one script that refuses a second active backfill."""

from __future__ import annotations

from redis import Redis

from scheduler import backfill, scripts, stored
from scheduler.backfill import BackfillActive, Plan
from scheduler.clock import iso, redis_now_ms
from scheduler.errors import RqbeatError, ScheduleNotFound
from scheduler.keys import Keys
from scheduler.memory import full_is_error
from scheduler.protocol import BackfillCancelReply, BackfillOverlap, BackfillStartReply, Flag
from scheduler.records import decode_definition


def plan(
    conn: Redis,
    keys: Keys,
    schedule_id: str,
    from_ms: int,
    to_ms: int,
    *,
    force: bool = False,
    overlap: BackfillOverlap = BackfillOverlap.ALLOW,
) -> Plan:
    """What a backfill of ``[from_ms, to_ms)`` would run (read-only). Raises
    :class:`ScheduleNotFound`, :class:`~scheduler.backfill.BadWindow` (empty, in the
    future, over :data:`~scheduler.backfill.MAX_FIRES` fires) or :class:`RqbeatError`
    (a broken schedule)."""
    definition = stored.read_text(conn, keys.schedule(schedule_id))
    if definition is None:
        raise ScheduleNotFound(schedule_id)
    try:
        schedule = decode_definition(schedule_id, definition)
    except ValueError as exc:
        raise RqbeatError(f"schedule {schedule_id!r} is broken ({exc}); apply a valid definition") from None
    fires = backfill.window_fires(schedule.trigger, from_ms, to_ms, redis_now_ms(conn))
    members = conn.zrangebyscore(keys.succeeded(schedule_id), fires[0], "+inf")
    chains = [c for c in backfill.parse_chains(members) if c[0] <= fires[-1]]
    return backfill.plan(
        schedule_id, fires, chains, from_ms=from_ms, to_ms=to_ms, force=force, overlap=overlap
    )


def start(
    conn: Redis,
    keys: Keys,
    script_set: scripts.Scripts,
    the_plan: Plan,
    *,
    by: str,
    note: str = "",
    history_maxlen: int,
    version: int | None = None,
) -> BackfillStartReply:
    """Start the backfill ``the_plan`` describes (with ``version``, only if the schedule
    is still at it). Raises :class:`BackfillActive` when one is running,
    :class:`ScheduleNotFound` when the schedule went meanwhile, and
    :class:`RqbeatError` when every fire already succeeded (nothing to run); each
    having written nothing. Returns STARTED, or CHANGED (nothing written)."""
    sid = the_plan.schedule_id
    if not the_plan.to_run:
        raise RqbeatError(
            f"nothing to backfill: all {len(the_plan.fires)} fires of the window already ran to "
            "success (--force runs them again)"
        )
    now = redis_now_ms(conn)
    args = [sid, the_plan.from_ms, the_plan.to_ms, len(the_plan.fires), the_plan.overlap]
    args += [Flag.of(the_plan.force), iso(now), now / 1000, history_maxlen, by]
    args += ["" if version is None else str(version), note, f"{iso(the_plan.from_ms)}..{iso(the_plan.to_ms)}"]
    bf_keys = [keys.backfill(sid), keys.backfills, keys.schedule(sid), keys.history(sid), keys.events]
    bf_keys.append(keys.log)
    with full_is_error(f"starting a backfill of {sid!r}"):
        reply = BackfillStartReply(scripts.run(script_set.backfill_start, bf_keys, args))
    if reply is BackfillStartReply.NOT_FOUND:
        raise ScheduleNotFound(sid)
    if reply is BackfillStartReply.ACTIVE:
        raise BackfillActive(sid)
    return reply


def status(conn: Redis, keys: Keys, schedule_id: str) -> backfill.Status | None:
    """The schedule's last backfill (active or finished); None when it has none."""
    raw = conn.hgetall(keys.backfill(schedule_id))
    return backfill.Status.of(schedule_id, raw) if raw else None


def cancel(
    conn: Redis,
    keys: Keys,
    script_set: scripts.Scripts,
    schedule_id: str,
    *,
    by: str,
    note: str = "",
    history_maxlen: int,
) -> bool:
    """Stop the schedule's active backfill (a run in flight finishes), audited as
    ``by``'s edit; False when it has none."""
    now = redis_now_ms(conn)
    cancel_keys = [
        keys.backfill(schedule_id),
        keys.backfills,
        keys.history(schedule_id),
        keys.schedule(schedule_id),
        keys.log,
    ]
    reply = scripts.run(
        script_set.backfill_cancel,
        cancel_keys,
        [schedule_id, f"canceled by {by}", iso(now), history_maxlen, by, note],
    )
    return BackfillCancelReply(reply) is BackfillCancelReply.CANCELED
