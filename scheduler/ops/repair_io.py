"""``rqbeat check``'s Redis side: read the state to diagnose, apply the fixes.

Reading is side-effect free: one SCAN for schedule hashes (so a hash missing from
the id set is found too), then pipelined TYPE/HGETALL reads in chunks. Each fix is
one Lua script that re-checks what the diagnosis saw (the key's type; the hash's
version, state and in-flight job id) and does nothing when it changed meanwhile, so a
running leader, a worker's ack or an upsert racing the repair is never overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq.job import Job

from scheduler import hashes
from scheduler.clock import iso, time_reply_ms
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.ops import repair
from scheduler.protocol import RUN_FIELDS, Flag, RepairReply, lua_list
from scheduler.records import text

log = logging.getLogger(__name__)

PLACE = (
    lua_list("RUN_FIELDS", RUN_FIELDS)
    + """
-- Put a schedule where its state says, with the fields the diagnosis resets, unless
-- the hash changed since it was read.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the running zset
-- KEYS[4] - the ids set
-- KEYS[5] - the revision counter
-- KEYS[6] - the events channel
-- KEYS[7] - its history stream
-- ARGV[1] - the schedule id
-- ARGV[2] - version as read ('' = missing)
-- ARGV[3] - state as read ('' = missing)
-- ARGV[4] - job_id as read ('' = missing)
-- ARGV[5] - where: 'due' | 'running' | 'none'
-- ARGV[6] - the score there
-- ARGV[7] - clear the run in flight (Flag: '1' | '0')
-- ARGV[8] - now, ISO
-- ARGV[9] - note for the history
-- ARGV[10] - history maxlen
-- ARGV[11..] - field, value pairs to set
-- returns (RepairReply) 1 repaired, 0 changed since it was read (nothing written)
local schedule, due, running, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local revision, events, history = KEYS[5], KEYS[6], KEYS[7]
local id, seen_version, seen_state, seen_job = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local where, score, clear_run, now = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local note, maxlen = ARGV[9], ARGV[10]
if redis.call('TYPE', schedule)['ok'] ~= 'hash' then return 0 end
local function was(name, value) return (redis.call('HGET', schedule, name) or '') == value end
if not (was('version', seen_version) and was('state', seen_state) and was('job_id', seen_job)) then
  return 0
end
redis.call('ZREM', due, id)
redis.call('ZREM', running, id)
if where == 'due' then redis.call('ZADD', due, score, id) end
if where == 'running' then redis.call('ZADD', running, score, id) end
redis.call('SADD', ids, id)
if clear_run == '1' then redis.call('HDEL', schedule, unpack(RUN_FIELDS)) end
if #ARGV >= 12 then redis.call('HSET', schedule, unpack(ARGV, 11)) end
local history_type = redis.call('TYPE', history)['ok']
if history_type == 'stream' or history_type == 'none' then
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'repaired', 'note', note,
             'at', now)
end
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'wake')
return 1
"""
)

DROP = """
-- Drop an id whose hash is missing.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the running zset
-- KEYS[4] - the ids set
-- KEYS[5] - the revision counter
-- ARGV[1] - the schedule id
-- returns (RepairReply) 1 dropped, 0 a hash exists now
local schedule, due, running, ids, revision = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
if redis.call('EXISTS', schedule) == 1 then return 0 end
redis.call('ZREM', due, id)
redis.call('ZREM', running, id)
redis.call('SREM', ids, id)
redis.call('INCR', revision)
return 1
"""

QUARANTINE = """
-- Move a key of the wrong type aside.
-- KEYS[1] - the key
-- KEYS[2] - where to move it
-- ARGV[1] - its type as read
-- returns (RepairReply) 1 moved aside, 0 its type changed since it was read or the
-- target exists
local key, target = KEYS[1], KEYS[2]
local seen_type = ARGV[1]
if redis.call('TYPE', key)['ok'] ~= seen_type then return 0 end
if redis.call('EXISTS', target) == 1 then return 0 end
redis.call('RENAME', key, target)
return 1
"""


@dataclass(slots=True)
class Examination:
    """Everything found in one read of the namespace."""

    now_ms: int
    findings: list[repair.Finding] = field(default_factory=list)
    fixes: list[repair.Fix] = field(default_factory=list)
    schedules: int = 0


@dataclass(frozen=True, slots=True)
class RepairOutcome:
    found: list[repair.Finding]
    applied: int
    remaining: list[repair.Finding]


def examine(conn: Redis, keys: Keys) -> Examination:
    """Read the namespace and diagnose it; writes nothing."""
    pipe = conn.pipeline(transaction=False)
    pipe.time()
    for name in repair.SET_TYPES:
        pipe.type(getattr(keys, name))
    time_reply, *types = pipe.execute()
    now_ms = time_reply_ms(time_reply)
    set_types = {n: (getattr(keys, n), str(text(t))) for n, t in zip(repair.SET_TYPES, types, strict=True)}
    quarantine = f"{keys.namespace}:quarantine:{now_ms}"
    result = Examination(now_ms)
    _merge(result, repair.diagnose_sets(set_types, quarantine))
    members = _members(conn, set_types)
    ids = sorted(set().union(*members.values(), _scanned_ids(conn, keys)))
    result.schedules = len(ids)
    for chunk in hashes.chunks(ids):
        for view in _views(conn, keys, chunk, members):
            _merge(result, repair.diagnose(view, now_ms, quarantine))
    return result


def apply_fixes(conn: Redis, keys: Keys, fixes: Sequence[repair.Fix], now_ms: int) -> int:
    """Apply each fix atomically; returns how many took effect (the others saw a change)."""
    scripts = {
        name: conn.register_script(body)
        for name, body in (("place", PLACE), ("drop", DROP), ("quarantine", QUARANTINE))
    }
    applied = 0
    for fix in fixes:
        keys_, args = _call(keys, fix, now_ms)
        done = RepairReply(scripts[fix.op](keys=keys_, args=args)) is RepairReply.APPLIED
        applied += done
        log.info("repair op=%s key=%s schedule=%s applied=%s", fix.op, fix.key, fix.schedule_id, done)
    return applied


def run_repair(conn: Redis, keys: Keys, *, passes: int = 4) -> RepairOutcome:
    """Examine, fix, examine again; the namespace's own keys first, since moving a
    wrong-typed set aside changes what every schedule looks like."""
    first = current = examine(conn, keys)
    applied = 0
    for _ in range(passes):
        if not current.fixes:
            break
        fixes = [f for f in current.fixes if f.schedule_id is None] or current.fixes
        applied += apply_fixes(conn, keys, fixes, current.now_ms)
        current = examine(conn, keys)
    return RepairOutcome(first.findings, applied, current.findings)


def _call(keys: Keys, fix: repair.Fix, now_ms: int) -> tuple[list[str], list[Any]]:
    sid = fix.schedule_id or ""
    if fix.op == "quarantine":
        return [fix.key, fix.note], [fix.seen_type]
    if fix.op == "drop":
        return [keys.schedule(sid), keys.due, keys.running, keys.ids, keys.revision], [sid]
    pairs = [item for name_value in fix.fields.items() for item in name_value]
    args = [sid, *fix.seen, fix.where, fix.score_ms / 1000, Flag.of(fix.clear_job)]
    args += [iso(now_ms), fix.note, HISTORY_MAXLEN, *pairs]
    hkeys = [keys.schedule(sid), keys.due, keys.running, keys.ids, keys.revision, keys.events]
    return [*hkeys, keys.history(sid)], args


def _merge(into: Examination, diagnosis: repair.Diagnosis) -> None:
    into.findings.extend(diagnosis.findings)
    into.fixes.extend(diagnosis.fixes)


def _members(conn: Redis, set_types: dict[str, tuple[str, str]]) -> dict[str, dict[str, float | None]]:
    """Members of due, running and ids (only those of the right type)."""
    pipe = conn.pipeline(transaction=False)
    names = [n for n, (_, t) in set_types.items() if t == repair.SET_TYPES[n]]
    for name in names:
        key = set_types[name][0]
        if repair.SET_TYPES[name] == "zset":
            pipe.zrange(key, 0, -1, withscores=True)
        else:
            pipe.smembers(key)
    out: dict[str, dict[str, float | None]] = {n: {} for n in repair.SET_TYPES}
    for name, reply in zip(names, pipe.execute(), strict=True):
        if repair.SET_TYPES[name] == "zset":
            out[name] = {str(text(m)): float(s) for m, s in reply}
        else:
            out[name] = dict.fromkeys((str(text(m)) for m in reply), None)
    return out


def _scanned_ids(conn: Redis, keys: Keys) -> set[str]:
    prefix = keys.schedule("")
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    return {str(text(k))[len(prefix) :] for k in conn.scan_iter(match=pattern, count=1000)}


def _views(
    conn: Redis, keys: Keys, ids: Sequence[str], members: dict[str, dict[str, float | None]]
) -> list[repair.View]:
    stored = list(hashes.read_hashes(conn, keys, ids, missing=True))
    pipe = conn.pipeline(transaction=False)
    for sid in ids:
        pipe.type(keys.history(sid))
    history_types = [str(text(t)) for t in pipe.execute()]
    jobs = _jobs_exist(conn, [s.fields["job_id"] for s in stored if s.fields.get("job_id")])
    views = []
    for sid, found, history_type in zip(ids, stored, history_types, strict=True):
        raw = found.fields
        views.append(
            repair.View(
                schedule_id=sid,
                key=keys.schedule(sid),
                key_type=found.key_type,
                fields=raw,
                in_ids=sid in members["ids"],
                due_ms=_score_ms(members["due"], sid),
                running_ms=_score_ms(members["running"], sid),
                history_key=keys.history(sid),
                history_type=history_type,
                job_exists=jobs.get(raw["job_id"]) if raw.get("job_id") else None,
            )
        )
    return views


def _score_ms(zset: dict[str, float | None], sid: str) -> int | None:
    score = zset.get(sid)
    return None if score is None else round(score * 1000)


def _jobs_exist(conn: Redis, job_ids: list[str]) -> dict[str, bool]:
    pipe = conn.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.exists(Job.redis_job_namespace_prefix + job_id)  # read only: no RQ side effects
    return {job_id: bool(n) for job_id, n in zip(job_ids, pipe.execute(), strict=True)}
