"""``rqbeat check``'s Redis side: read the state to diagnose, apply the fixes.

Reading is side-effect free: the ids come from the sets and one SCAN for schedule
hashes (so a hash missing from the id set is found too); then :data:`VIEW_READ` reads
each schedule whole -- its hash, its memberships and its RQ job -- in one script per
chunk. A schedule moves (dispatch, ack, edit) in one script too, so check sees each
move entirely or not at all: reading the sets first and the hashes later took every
move in between for an inconsistency (hundreds of ``wrong_set`` per second at 50k
busy schedules). Each fix is
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
from redis.commands.core import Script

from scheduler import hashes, rqkeys
from scheduler.clock import iso, time_reply_ms
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.ops import repair, runrepair, runrepair_io
from scheduler.protocol import RUN_FIELDS, Flag, JobPresence, RepairReply, lua_list
from scheduler.records import text
from scheduler.scripts import Flags, register

log = logging.getLogger(__name__)

#: Schedules per VIEW_READ call: one script holds Redis while it reads them all.
VIEW_CHUNK = 500

VIEW_READ = """
-- One consistent look at a chunk of schedules (nothing written): a transition racing
-- the check is seen whole or not at all, never as a schedule in the wrong set.
-- KEYS[1] - the due zset
-- KEYS[2] - the running zset
-- KEYS[3] - the ids set
-- ARGV[1] - the schedule key prefix
-- ARGV[2] - the history key prefix
-- ARGV[3] - RQ's job key prefix
-- ARGV[4..] - the schedule ids
-- returns per id: {hash type, history type, HGETALL (flat, {} unless a hash),
-- due score or false, running score or false, 1 in ids or 0, JobPresence: 1 its RQ
-- job exists, 0 gone, -1 no job_id}; a set of the wrong type reads as empty (a finding
-- of its own)
local due, running, ids = KEYS[1], KEYS[2], KEYS[3]
local schedule_prefix, history_prefix, job_prefix = ARGV[1], ARGV[2], ARGV[3]
local function member(command, key, id)
  local reply = redis.pcall(command, key, id)
  if type(reply) == 'table' then return false end  -- WRONGTYPE
  return reply
end
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = schedule_prefix .. id
  local key_type = redis.call('TYPE', key)['ok']
  local fields = key_type == 'hash' and redis.call('HGETALL', key) or {}
  local job = -1
  local job_id = key_type == 'hash' and redis.call('HGET', key, 'job_id') or false
  if job_id then job = redis.call('EXISTS', job_prefix .. job_id) end
  out[#out + 1] = {key_type, redis.call('TYPE', history_prefix .. id)['ok'], fields,
                   member('ZSCORE', due, id), member('ZSCORE', running, id),
                   member('SISMEMBER', ids, id) == 1 and 1 or 0, job}
end
return out
"""

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
    ids = sorted(_listed_ids(conn, set_types) | _scanned_ids(conn, keys))
    result.schedules = len(ids)
    view_read = register(conn, VIEW_READ, Flags.READS)
    for chunk in hashes.chunks(ids, VIEW_CHUNK):
        for view in _views(view_read, keys, chunk):
            _merge(result, repair.diagnose(view, now_ms, quarantine))
    _merge(result, runrepair_io.examine_runs(conn, keys))  # allow_all's records (runrepair)
    return result


def apply_fixes(conn: Redis, keys: Keys, fixes: Sequence[repair.Fix], now_ms: int) -> int:
    """Apply each fix atomically; returns how many took effect (the others saw a change)."""
    scripts = {
        name: register(conn, body)  # writes: refused as a whole when Redis is full
        for name, body in (("place", PLACE), ("drop", DROP), ("quarantine", QUARANTINE))
    }
    run_fix = register(conn, runrepair_io.RUN_FIX)
    scripts.update(dict.fromkeys(runrepair.OPS, run_fix))
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
    if fix.op in runrepair.OPS:
        return runrepair_io.fix_call(keys, fix, now_ms)
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


def _listed_ids(conn: Redis, set_types: dict[str, tuple[str, str]]) -> set[str]:
    """The ids in due, running and ids (those of the right type): where to look."""
    pipe = conn.pipeline(transaction=False)
    for name, (key, key_type) in set_types.items():
        if key_type == "zset" == repair.SET_TYPES[name]:
            pipe.zrange(key, 0, -1)
        elif key_type == "set" == repair.SET_TYPES[name]:
            pipe.smembers(key)
    return {str(text(m)) for members in pipe.execute() for m in members}


def _scanned_ids(conn: Redis, keys: Keys) -> set[str]:
    prefix = keys.schedule("")
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    return {str(text(k))[len(prefix) :] for k in conn.scan_iter(match=pattern, count=1000)}


def _views(view_read: Script, keys: Keys, ids: Sequence[str]) -> list[repair.View]:
    """Each of ``ids`` as it is at one instant (:data:`VIEW_READ`)."""
    prefixes = [keys.schedule(""), keys.history(""), rqkeys.JOB_PREFIX]
    reply = view_read(keys=[keys.due, keys.running, keys.ids], args=[*prefixes, *ids])
    views = []
    for sid, (key_type, history_type, flat, due, running, in_ids, job) in zip(ids, reply, strict=True):
        fields = {str(text(k)): str(text(v)) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        views.append(
            repair.View(
                schedule_id=sid,
                key=keys.schedule(sid),
                key_type=str(text(key_type)),
                fields=fields,
                in_ids=bool(in_ids),
                due_ms=_score_ms(due),
                running_ms=_score_ms(running),
                history_key=keys.history(sid),
                history_type=str(text(history_type)),
                job_exists=None if job == JobPresence.NO_RUN else job == JobPresence.EXISTS,
            )
        )
    return views


def _score_ms(score: bytes | None) -> int | None:
    return None if score is None else round(float(score) * 1000)
