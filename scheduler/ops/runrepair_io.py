"""``rqbeat check``'s Redis side for the ``allow_all`` run records.

The ids come from one SCAN of ``<ns>:runs:*`` and the members of ``<ns>:concurrent``;
:data:`RUNS_READ` reads each id whole (the schedule's existence, cap and count, the
records, each record's member, the members seen without a record) in one script per
chunk, so a run starting or ending while check runs is seen before or after, never
half-way. Each fix (:data:`RUN_FIX`) re-checks what the diagnosis saw -- the record's
raw value, the member's absence or presence, the stored count -- and writes nothing
when a leader, a worker's ack or an edit changed it meanwhile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from redis import Redis

from scheduler import hashes
from scheduler.keys import Keys
from scheduler.ops import repair, runrepair
from scheduler.protocol import CAP_FIELD, IN_FLIGHT_FIELD, SLOT_WAIT_SCORE
from scheduler.records import text
from scheduler.scripts import Flags, register

#: Schedule ids per RUNS_READ call.
RUNS_CHUNK = 200

RUNS_READ = (
    f"""
local CAP_FIELD, IN_FLIGHT_FIELD = '{CAP_FIELD}', '{IN_FLIGHT_FIELD}'
"""
    + """
-- One consistent look at the allow_all state of a chunk of schedule ids (nothing written).
-- KEYS[1] - the concurrent zset
-- ARGV[1] - the schedule key prefix
-- ARGV[2] - the runs key prefix
-- ARGV[3..] - per id: the id, k, then the k fires of its members seen in the zset
-- returns per id: {schedule exists 1/0, has the cap 1/0, runs_in_flight or false,
-- HGETALL of its runs hash (flat, {} unless a hash), the fires of records that have
-- their member, the fires of members (of those passed) still there without a record}
local concurrent = KEYS[1]
local schedule_prefix, runs_prefix = ARGV[1], ARGV[2]
local out, i = {}, 3
while i <= #ARGV do
  local id, k = ARGV[i], tonumber(ARGV[i + 1])
  local schedule, runs = schedule_prefix .. id, runs_prefix .. id
  local is_hash = redis.call('TYPE', schedule)['ok'] == 'hash'
  local records = redis.call('TYPE', runs)['ok'] == 'hash' and redis.call('HGETALL', runs) or {}
  local with_member, without_record = {}, {}
  for j = 1, #records, 2 do
    if redis.call('ZSCORE', concurrent, id .. ':' .. records[j]) then
      with_member[#with_member + 1] = records[j]
    end
  end
  for j = i + 2, i + 1 + k do
    local fire = ARGV[j]
    local present = redis.call('ZSCORE', concurrent, id .. ':' .. fire)
    if present and (#records == 0 or redis.call('HEXISTS', runs, fire) == 0) then
      without_record[#without_record + 1] = fire
    end
  end
  out[#out + 1] = {is_hash and 1 or 0,
                   is_hash and redis.call('HEXISTS', schedule, CAP_FIELD) or 0,
                   is_hash and redis.call('HGET', schedule, IN_FLIGHT_FIELD) or false,
                   records, with_member, without_record}
  i = i + 2 + k
end
return out
"""
)

RUN_FIX = (
    f"""
local CAP_FIELD, IN_FLIGHT_FIELD, SLOT_WAIT_SCORE = '{CAP_FIELD}', '{IN_FLIGHT_FIELD}', {SLOT_WAIT_SCORE}
"""
    + """
-- Repair one allow_all run record, compare-and-set on what the diagnosis saw.
-- KEYS[1] - the schedule hash
-- KEYS[2] - its runs hash
-- KEYS[3] - the concurrent zset
-- KEYS[4] - the due zset
-- KEYS[5] - the events channel
-- KEYS[6] - the queued zset
-- ARGV[1] - op: 'run_member' | 'run_drop' | 'run_count' (runrepair.RunOp)
-- ARGV[2] - the schedule id
-- ARGV[3] - the fire, epoch ms ('' for run_count)
-- ARGV[4] - the record as read ('' = none), or for run_count the count as read ('' = none)
-- ARGV[5] - now, score
-- returns (RepairReply) 1 repaired, 0 changed since it was read (nothing written)
local schedule, runs, concurrent, due, events, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                                        KEYS[5], KEYS[6]
local op, id, fire, seen, now_score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local member = id .. ':' .. fire
local function recount()  -- the count from the records; a fire waiting for a freed slot is due now
  if redis.call('TYPE', schedule)['ok'] ~= 'hash' then return end
  local n = redis.call('HLEN', runs)
  redis.call('HSET', schedule, IN_FLIGHT_FIELD, n)
  local cap = tonumber(redis.call('HGET', schedule, CAP_FIELD) or '')
  local waiting = redis.call('ZSCORE', due, id)
  if cap and n < cap and waiting and tonumber(waiting) >= SLOT_WAIT_SCORE then
    redis.call('ZADD', due, now_score, id)
    redis.call('PUBLISH', events, 'wake')
  end
end
if op == 'run_count' then
  if redis.call('TYPE', schedule)['ok'] ~= 'hash' then return 0 end
  if (redis.call('HGET', schedule, IN_FLIGHT_FIELD) or '') ~= seen then return 0 end
  recount()
  return 1
end
if redis.call('TYPE', runs)['ok'] ~= 'hash' and redis.call('EXISTS', runs) == 1 then return 0 end
local raw = redis.call('HGET', runs, fire) or ''
if raw ~= seen then return 0 end
if op == 'run_member' then
  if raw == '' or redis.call('ZSCORE', concurrent, member) then return 0 end
  redis.call('ZADD', concurrent, now_score, member)
  redis.call('PUBLISH', events, 'wake')
  return 1
end
if raw == '' and not redis.call('ZSCORE', concurrent, member) then return 0 end
if raw ~= '' and redis.call('EXISTS', schedule) == 1 then
  -- only an unreadable record of an existing schedule is dropped
  local ok, run = pcall(cjson.decode, raw)
  if ok and type(run) == 'table' and run.job_id and run.attempt and run.state then return 0 end
end
redis.call('HDEL', runs, fire)
redis.call('ZREM', concurrent, member)
redis.call('ZREM', queued, member)
recount()
return 1
"""
)


def examine_runs(conn: Redis, keys: Keys) -> repair.Diagnosis:
    """Read every ``allow_all`` record and member and diagnose them; writes nothing."""
    members: dict[str, list[str]] = defaultdict(list)
    if text(conn.type(keys.concurrent)) == "zset":
        listed: list[bytes] = conn.zrange(keys.concurrent, 0, -1)  # type: ignore[assignment]
        for m in listed:
            sid, sep, fire = str(text(m)).rpartition(":")
            if sep:
                members[sid].append(fire)
    prefix = keys.runs("")
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    ids = sorted(
        {str(text(k))[len(prefix) :] for k in conn.scan_iter(match=pattern, count=1000)} | set(members)
    )
    out = repair.Diagnosis()
    runs_read = register(conn, RUNS_READ, Flags.READS)
    for chunk in hashes.chunks(ids, RUNS_CHUNK):
        args: list[Any] = [keys.schedule(""), prefix]
        for sid in chunk:
            args += [sid, len(members[sid]), *members[sid]]
        for sid, row in zip(chunk, runs_read(keys=[keys.concurrent], args=args), strict=True):
            diagnosis = runrepair.diagnose_runs(_view(keys, sid, row))
            out.findings += diagnosis.findings
            out.fixes += diagnosis.fixes
    return out


def fix_call(keys: Keys, fix: repair.Fix, now_ms: int) -> tuple[list[str], list[Any]]:
    """RUN_FIX's keys and arguments for ``fix``."""
    sid = fix.schedule_id or ""
    fire, seen, _ = fix.seen
    script_keys = [keys.schedule(sid), keys.runs(sid), keys.concurrent, keys.due, keys.events, keys.queued]
    return script_keys, [fix.op, sid, fire, seen, now_ms / 1000]


def _view(keys: Keys, sid: str, row: Sequence[Any]) -> runrepair.RunsView:
    exists, capped, count, flat, with_member, without_record = row
    records = {str(text(f)): str(text(v)) for f, v in zip(flat[::2], flat[1::2], strict=True)}
    return runrepair.RunsView(
        schedule_id=sid,
        runs_key=keys.runs(sid),
        schedule_exists=bool(exists),
        allow_all=bool(capped),
        count=text(count) if count else None,
        records=records,
        with_member=frozenset(str(text(f)) for f in with_member),
        members_without_record=tuple(str(text(f)) for f in without_record),
    )
