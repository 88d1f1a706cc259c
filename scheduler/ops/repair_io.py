"""``rqbeat check``'s Redis side: read the state to diagnose, apply the fixes.

Reading is side-effect free: one SCAN for schedule hashes (so a hash missing from
the id set is found too), then pipelined TYPE/HGETALL reads in chunks. Each fix is
one Lua script that re-checks what the diagnosis saw (the key's type; the hash's
version, state and in-flight job id) and does nothing when it changed meanwhile, so a
running leader, a worker's ack or an upsert racing the repair is never overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq.job import Job

from scheduler.clock import iso, time_reply_ms
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.ops import repair
from scheduler.records import text
from scheduler.scripts import register

log = logging.getLogger(__name__)

_CHUNK = 500

PLACE = """
-- KEYS[1] schedule hash, KEYS[2] due, KEYS[3] running, KEYS[4] ids, KEYS[5] revision,
-- KEYS[6] events, KEYS[7] history
-- ARGV[1] id, ARGV[2..4] version, state, job_id as read ('' = missing),
-- ARGV[5] where: 'due' | 'running' | 'none', ARGV[6] score, ARGV[7] '1' = clear the run
-- in flight, ARGV[8] now ISO, ARGV[9] note, ARGV[10] history maxlen, ARGV[11..] field,
-- value pairs to set. returns 1 repaired, 0 changed since it was read (nothing written)
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
local function was(name, value) return (redis.call('HGET', KEYS[1], name) or '') == value end
if not (was('version', ARGV[2]) and was('state', ARGV[3]) and was('job_id', ARGV[4])) then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[5] == 'due' then redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1]) end
if ARGV[5] == 'running' then redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1]) end
redis.call('SADD', KEYS[4], ARGV[1])
if ARGV[7] == '1' then redis.call('HDEL', KEYS[1], 'job_id', 'job_queue', 'epoch', 'dispatched_at') end
if #ARGV >= 12 then redis.call('HSET', KEYS[1], unpack(ARGV, 11)) end
local history = redis.call('TYPE', KEYS[7])['ok']
if history == 'stream' or history == 'none' then
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[10], '*', 'event', 'repaired', 'note', ARGV[9],
             'at', ARGV[8])
end
redis.call('INCR', KEYS[5])
redis.call('PUBLISH', KEYS[6], 'wake')
return 1
"""

DROP = """
-- KEYS[1] schedule hash, KEYS[2] due, KEYS[3] running, KEYS[4] ids, KEYS[5] revision
-- ARGV[1] id. Drops an id whose hash is missing; returns 1, or 0 if a hash exists now.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[5])
return 1
"""

QUARANTINE = """
-- KEYS[1] key, KEYS[2] where to move it; ARGV[1] its type as read
-- returns 1 moved aside, 0 its type changed since it was read or the target exists
if redis.call('TYPE', KEYS[1])['ok'] ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
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
    for chunk in _chunks(ids):
        for view in _views(conn, keys, chunk, members):
            _merge(result, repair.diagnose(view, now_ms, quarantine))
    return result


def apply_fixes(conn: Redis, keys: Keys, fixes: Sequence[repair.Fix], now_ms: int) -> int:
    """Apply each fix atomically; returns how many took effect (the others saw a change)."""
    scripts = {
        name: register(conn, body)  # writes: refused as a whole when Redis is full
        for name, body in (("place", PLACE), ("drop", DROP), ("quarantine", QUARANTINE))
    }
    applied = 0
    for fix in fixes:
        keys_, args = _call(keys, fix, now_ms)
        done = scripts[fix.op](keys=keys_, args=args) == 1
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
    args = [sid, *fix.seen, fix.where, fix.score_ms / 1000, "1" if fix.clear_job else "0"]
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
    conn: Redis, keys: Keys, ids: list[str], members: dict[str, dict[str, float | None]]
) -> list[repair.View]:
    pipe = conn.pipeline(transaction=False)
    for sid in ids:
        pipe.type(keys.schedule(sid))
        pipe.type(keys.history(sid))
    types = [str(text(t)) for t in pipe.execute()]
    pipe = conn.pipeline(transaction=False)
    hashes = [sid for sid, t in zip(ids, types[::2], strict=True) if t == "hash"]
    for sid in hashes:
        pipe.hgetall(keys.schedule(sid))
    fields = {
        sid: {str(text(k)): str(text(v)) for k, v in raw.items()}
        for sid, raw in zip(hashes, pipe.execute(), strict=True)
    }
    jobs = _jobs_exist(conn, [f["job_id"] for f in fields.values() if f.get("job_id")])
    views = []
    for sid, key_type, history_type in zip(ids, types[::2], types[1::2], strict=True):
        raw = fields.get(sid, {})
        views.append(
            repair.View(
                schedule_id=sid,
                key=keys.schedule(sid),
                key_type=key_type,
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


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
