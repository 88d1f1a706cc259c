"""Backfill: start, dispatch one fire (fenced), ack or fail its run, cancel; and the
record of succeeded fires that a backfill skips."""

from __future__ import annotations

from scheduler.lua.common import AUDIT
from scheduler.protocol import BACKFILL_RUN_FIELDS, lua_list

#: Chains kept per schedule in ``<ns>:succeeded:<id>`` (the oldest go first).
SUCCEEDED_CHAINS_KEPT = 1_000

#: Records that fire ARGV ran to success, in a compact form: the zset holds chains
#: ``<first>:<last>:<next>`` (epoch ms, score = last) of consecutive fires of the
#: trigger that all succeeded; ``next`` is the trigger's fire after ``last``. A fire
#: equal to the ``next`` of the chain before it extends that chain, and a chain that
#: starts at this fire's ``next`` joins it, so a healthy schedule keeps one member
#: however long it runs; a gap (a missed or given-up fire) starts a new chain.
RECORD_SUCCESS_LUA = (
    f"""
local SUCCEEDED_CHAINS_KEPT = {SUCCEEDED_CHAINS_KEPT}
"""
    + """
local function chain_of(member)
  return string.match(member, '^(%d+):(%d+):(%d+)$')
end
local function record_success(key, fire, expect)
  local covering = redis.call('ZRANGEBYSCORE', key, fire, '+inf', 'LIMIT', 0, 1)[1]
  local covered_from = covering and chain_of(covering)
  if covered_from and tonumber(covered_from) <= tonumber(fire) then return end  -- a duplicate
  local first, last_, next_ = fire, fire, expect
  local before = redis.call('ZREVRANGEBYSCORE', key, '(' .. fire, '-inf', 'LIMIT', 0, 1)[1]
  if before then
    local s, _, e = chain_of(before)
    if e == fire then first = s; redis.call('ZREM', key, before) end
  end
  local after = redis.call('ZRANGEBYSCORE', key, '(' .. fire, '+inf', 'LIMIT', 0, 1)[1]
  if after then
    local s, l, e = chain_of(after)
    if s == expect then last_ = l; next_ = e; redis.call('ZREM', key, after) end
  end
  redis.call('ZADD', key, last_, first .. ':' .. last_ .. ':' .. next_)
  local n = redis.call('ZCARD', key)
  if n > SUCCEEDED_CHAINS_KEPT then
    redis.call('ZREMRANGEBYRANK', key, 0, n - SUCCEEDED_CHAINS_KEPT - 1)
  end
end
"""
)

BACKFILL_START = (
    AUDIT
    + """
-- Start a backfill of one schedule's window, unless one is still active; audited (who,
-- the version, the note) in its history and the edit log, in this same script.
-- KEYS[1] - the backfill hash
-- KEYS[2] - the backfills zset
-- KEYS[3] - the schedule hash
-- KEYS[4] - its history stream
-- KEYS[5] - the events channel
-- KEYS[6] - the edit log stream
-- ARGV[1] - the schedule id
-- ARGV[2] - the window's start, epoch ms (inclusive)
-- ARGV[3] - the window's end, epoch ms (exclusive)
-- ARGV[4] - fires in the window
-- ARGV[5] - overlap (BackfillOverlap)
-- ARGV[6] - force: run fires that already succeeded too (Flag)
-- ARGV[7] - now, ISO
-- ARGV[8] - now, score
-- ARGV[9] - history maxlen
-- ARGV[10] - who started it
-- ARGV[11] - the schedule version the caller expects ('' = any): a compare-and-set
-- ARGV[12] - note ('' = none)
-- ARGV[13] - the window, for the audit entry's changed ('<from ISO>..<to ISO>')
-- returns (BackfillStartReply) 1 started, 0 one is active, -1 no such schedule, -2 not at
-- the expected version (nothing written but for 1)
local bf, backfills, schedule, history, events, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
                                                      KEYS[6]
local id, from_ms, to_ms, total, overlap, force = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, now_score, maxlen, by, expected = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local note, window = ARGV[12], ARGV[13]
if redis.call('EXISTS', schedule) == 0 then return -1 end
local version = redis.call('HGET', schedule, 'version') or ''
if expected ~= '' and version ~= expected then return -2 end
if redis.call('HGET', bf, 'state') == 'active' then return 0 end
redis.call('DEL', bf)
redis.call('HSET', bf, 'state', 'active', 'from_ms', from_ms, 'to_ms', to_ms, 'total', total,
           'after_ms', tostring(tonumber(from_ms) - 1), 'overlap', overlap, 'force', force,
           'succeeded', 0, 'skipped', 0, 'failed', 0, 'attempt', 1, 'created_at', now,
           'updated_at', now, 'by', by)
redis.call('ZADD', backfills, now_score, id)
local entry = audit_entry('backfill_started', now, by, note, version, window)
for _, v in ipairs({'from_ms', from_ms, 'to_ms', to_ms, 'fires', total, 'overlap', overlap,
                    'force', force}) do
  entry[#entry + 1] = v
end
audit(history, log, maxlen, id, entry)
redis.call('PUBLISH', events, 'wake')
return 1
"""
)

BACKFILL_DISPATCH = (
    lua_list("RUN_FIELDS", BACKFILL_RUN_FIELDS)
    + """
-- The leader's step of one backfill: move the cursor over the fires it skips (they
-- already succeeded), then either enqueue the next fire's job (hash + RPUSH, as RQ
-- writes them) and record it in flight, or finish the backfill. Fenced by the lease
-- and compare-and-set on the cursor, so a deposed leader or a stale read writes
-- nothing.
-- KEYS[1] - the leader lease
-- KEYS[2] - the backfill hash
-- KEYS[3] - the backfills zset
-- KEYS[4] - the schedule's history stream
-- KEYS[5] - RQ's queues set
-- KEYS[6] - rqbeat's queues zset
-- KEYS[7] - the stats hash
-- ARGV[1] - our lease token
-- ARGV[2] - the schedule id
-- ARGV[3] - the cursor read (after_ms: every fire up to it is done)
-- ARGV[4] - the new cursor (the last fire skipped, or the same)
-- ARGV[5] - fires skipped
-- ARGV[6] - now, ISO
-- ARGV[7] - now, score
-- ARGV[8] - history maxlen
-- ARGV[9] - the leader's epoch
-- ARGV[10] - when the leader looks at the run next, score
-- ARGV[11] - 'run', 'done' (no fire left) or 'skip' (only the cursor moves: look again)
-- for 'run':
-- ARGV[12] - the fire, epoch ms
-- ARGV[13] - the fire, ISO
-- ARGV[14] - the attempt
-- ARGV[15] - the job id
-- ARGV[16] - RQ's job key prefix
-- ARGV[17] - RQ's queue key prefix
-- ARGV[18] - the queue
-- ARGV[19] - the job's ttl, s (0 = none)
-- ARGV[20] - the job's created_at/enqueued_at (RQ's format)
-- ARGV[21..] - the job hash's field/value pairs (all but the two stamps)
-- returns (BackfillDispatchReply) 1 dispatched, 2 done, 3 skipped, 0 changed since the read
-- (nothing written), -1 the lease is not ours (nothing written)
local leader, bf, backfills, history, queues_set, our_queues, stats = KEYS[1], KEYS[2], KEYS[3],
                                                                       KEYS[4], KEYS[5], KEYS[6],
                                                                       KEYS[7]
local token, id, read_after, new_after, skipped = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, now_score, maxlen, epoch, look, mode = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10],
                                                  ARGV[11]
local fire_ms, fire, attempt, job, job_prefix, queue_prefix = ARGV[12], ARGV[13], ARGV[14],
                                                              ARGV[15], ARGV[16], ARGV[17]
local queue, ttl, stamp = ARGV[18], ARGV[19], ARGV[20]
if redis.call('GET', leader) ~= token then return -1 end
if redis.call('HGET', bf, 'state') ~= 'active' or redis.call('HGET', bf, 'after_ms') ~= read_after
    or redis.call('HEXISTS', bf, 'job_id') == 1 then
  return 0
end
redis.call('HINCRBY', bf, 'skipped', skipped)
redis.call('HSET', bf, 'after_ms', new_after, 'updated_at', now)
if mode == 'done' then
  redis.call('HSET', bf, 'state', 'done', 'finished_at', now)
  redis.call('ZREM', backfills, id)
  local c = redis.call('HMGET', bf, 'succeeded', 'skipped', 'failed')
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'backfill_done',
             'succeeded', c[1], 'skipped', c[2], 'failed', c[3], 'at', now)
  return 2
end
if mode == 'skip' then
  redis.call('ZADD', backfills, look, id)
  return 3
end
local job_key, queue_key = job_prefix .. job, queue_prefix .. queue
redis.call('HSET', job_key, 'created_at', stamp, 'enqueued_at', stamp, unpack(ARGV, 21))
if ttl ~= '0' then redis.call('EXPIRE', job_key, ttl) end
redis.call('SADD', queues_set, queue_key)
redis.call('ZADD', our_queues, now_score, queue)
redis.call('RPUSH', queue_key, job)
redis.call('HSET', bf, 'job_id', job, 'fire_ms', fire_ms, 'epoch', epoch, 'dispatched_at', now)  -- RUN_FIELDS
redis.call('ZADD', backfills, look, id)
redis.call('HINCRBY', stats, 'backfill_dispatched_total', 1)
return 1  -- its history entry is the outcome's (one per fire: a long backfill is long enough)
"""
)

BACKFILL_ACK = (
    lua_list("RUN_FIELDS", BACKFILL_RUN_FIELDS)
    + RECORD_SUCCESS_LUA
    + """
-- A backfill run succeeded: stamp after ack. The cursor moves past its fire, the fire
-- joins the succeeded record, and the leader is woken to dispatch the next one.
-- Compare-and-set on the run in flight: a late or duplicate ack does nothing.
-- KEYS[1] - the backfill hash
-- KEYS[2] - the backfills zset
-- KEYS[3] - the succeeded zset
-- KEYS[4] - the schedule's history stream
-- KEYS[5] - the events channel
-- KEYS[6] - the stats hash
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - its fire, epoch ms
-- ARGV[4] - the trigger's fire after it, epoch ms
-- ARGV[5] - now, ISO
-- ARGV[6] - now, score
-- ARGV[7] - history maxlen
-- ARGV[8] - who acked: 'worker' | 'leader'
-- ARGV[9] - its fire, ISO
-- returns (BackfillRunReply) 1 acked, 0 not this backfill's run in flight (no-op)
local bf, backfills, succeeded, history, events, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                                         KEYS[5], KEYS[6]
local id, job, fire_ms, expect, now, now_score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local maxlen, by, fire_at = ARGV[7], ARGV[8], ARGV[9]
if redis.call('HGET', bf, 'job_id') ~= job or redis.call('HGET', bf, 'state') ~= 'active' then
  return 0
end
local epoch = redis.call('HGET', bf, 'epoch') or ''
redis.call('HDEL', bf, unpack(RUN_FIELDS))
redis.call('HINCRBY', bf, 'succeeded', 1)
redis.call('HSET', bf, 'after_ms', fire_ms, 'attempt', 1, 'updated_at', now)
record_success(succeeded, fire_ms, expect)
redis.call('HINCRBY', stats, 'backfill_succeeded_total', 1)
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'backfill_succeeded',
           'fire_at', fire_at, 'job_id', job, 'epoch', epoch, 'by', by, 'at', now)
redis.call('ZADD', backfills, now_score, id)
redis.call('PUBLISH', events, 'wake')
return 1
"""
)

BACKFILL_FAIL = (
    lua_list("RUN_FIELDS", BACKFILL_RUN_FIELDS)
    + """
-- A backfill run failed: retry its fire after the back-off (attempt + 1), or give the
-- fire up (max_attempts) and move the cursor past it. Compare-and-set on the run.
-- KEYS[1] - the backfill hash
-- KEYS[2] - the backfills zset
-- KEYS[3] - the schedule's history stream
-- KEYS[4] - the stats hash
-- KEYS[5] - the events channel
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - its fire, epoch ms
-- ARGV[4] - give the fire up (Flag)
-- ARGV[5] - when to look again (the retry), score
-- ARGV[6] - now, ISO
-- ARGV[7] - error text
-- ARGV[8] - history maxlen
-- ARGV[9] - its fire, ISO
-- returns (BackfillRunReply) 1 recorded, 0 not this backfill's run in flight (no-op)
local bf, backfills, history, stats, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, job, fire_ms, give_up, retry_score, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local err, maxlen, fire_at = ARGV[7], ARGV[8], ARGV[9]
if redis.call('HGET', bf, 'job_id') ~= job or redis.call('HGET', bf, 'state') ~= 'active' then
  return 0
end
redis.call('HDEL', bf, unpack(RUN_FIELDS))
redis.call('HSET', bf, 'updated_at', now, 'last_error', err)
if give_up == '1' then
  redis.call('HINCRBY', bf, 'failed', 1)
  redis.call('HSET', bf, 'after_ms', fire_ms, 'attempt', 1)
  redis.call('HINCRBY', stats, 'backfill_gave_up_total', 1)
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'backfill_gave_up',
             'fire_at', fire_at, 'job_id', job, 'error', err, 'at', now)
  redis.call('PUBLISH', events, 'wake')
else
  redis.call('HINCRBY', bf, 'attempt', 1)
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'backfill_failed',
             'fire_at', fire_at, 'job_id', job, 'error', err, 'at', now)
end
redis.call('ZADD', backfills, retry_score, id)
return 1
"""
)

BACKFILL_NUDGE = """
-- A worker saw a backfill job fail: bring the leader's look forward to now.
-- KEYS[1] - the backfill hash
-- KEYS[2] - the backfills zset
-- KEYS[3] - the events channel
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id that failed
-- ARGV[3] - now, score
-- returns 1 nudged, 0 not this backfill's run in flight
local bf, backfills, events = KEYS[1], KEYS[2], KEYS[3]
local id, job, now_score = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', bf, 'job_id') ~= job then return 0 end
redis.call('ZADD', backfills, 'XX', now_score, id)
redis.call('PUBLISH', events, 'wake')
return 1
"""

BACKFILL_CANCEL = (
    lua_list("RUN_FIELDS", BACKFILL_RUN_FIELDS)
    + AUDIT
    + """
-- Stop a backfill: no further fire is dispatched; a run in flight finishes, and its
-- ack finds no run to record (the hash forgets it). A cancel by someone (not the
-- leader's, for a schedule gone or broken) is audited in the history and the edit log.
-- KEYS[1] - the backfill hash
-- KEYS[2] - the backfills zset
-- KEYS[3] - the schedule's history stream
-- KEYS[4] - the schedule hash
-- KEYS[5] - the edit log stream
-- ARGV[1] - the schedule id
-- ARGV[2] - why
-- ARGV[3] - now, ISO
-- ARGV[4] - history maxlen
-- ARGV[5] - who cancels it ('' = the leader: no edit log entry)
-- ARGV[6] - note ('' = none)
-- returns (BackfillCancelReply) 1 canceled, 0 no active backfill
local bf, backfills, history, schedule, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, why, now, maxlen, by, note = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
redis.call('ZREM', backfills, id)
if redis.call('HGET', bf, 'state') ~= 'active' then return 0 end
redis.call('HDEL', bf, unpack(RUN_FIELDS))
redis.call('HSET', bf, 'state', 'canceled', 'error', why, 'finished_at', now, 'updated_at', now)
if redis.call('EXISTS', schedule) == 0 then return 1 end  -- its history went with it
if by == '' then
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'backfill_canceled',
             'reason', why, 'at', now)
  return 1
end
local entry = audit_entry('backfill_canceled', now, by, note,
                          redis.call('HGET', schedule, 'version') or '', '')
entry[#entry + 1] = 'reason'
entry[#entry + 1] = why
audit(history, log, maxlen, id, entry)
return 1
"""
)
