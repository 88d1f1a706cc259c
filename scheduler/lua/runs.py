"""The end of a run: ack, retry, nudge; its start; a schedule marked broken."""

from __future__ import annotations

from scheduler.lua.common import RUN_FIELDS_LUA, WAKE_IF_EARLIER

ACK = (
    WAKE_IF_EARLIER
    + RUN_FIELDS_LUA
    + """
-- The run of a job is over for good (succeeded, or failed and given up): re-arm the
-- schedule at its next fire. Compare-and-set on the in-flight job id, so a late,
-- duplicate or stale ack (run already acked, schedule removed, re-dispatched) does
-- nothing.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the running zset
-- KEYS[4] - its history stream
-- KEYS[5] - the events channel
-- KEYS[6] - the stats hash (scheduler.engine.clusterstats)
-- KEYS[7] - the queued zset
-- KEYS[8] - the stale zset
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - the version the next fire was computed from
-- ARGV[4] - the next fire, ISO
-- ARGV[5] - the next due score
-- ARGV[6] - now, ISO
-- ARGV[7] - now, score
-- ARGV[8] - outcome (AckOutcome: 'succeeded' | 'gave_up')
-- ARGV[9] - fires dropped by the misfire policy
-- ARGV[10] - history maxlen
-- ARGV[11] - error text (gave_up) or ''
-- ARGV[12] - resumed_at the next fire was computed from ('' = none)
-- ARGV[13] - when the schedule counts as stale without another success, score
-- ARGV[14..] - (field, increment) pairs for the stats hash
-- returns (AckReply) 1 re-armed, 2 definition changed or resumed meanwhile (due now,
-- fire recomputed by the leader), 3 paused (left idle), 0 not this schedule's run in
-- flight (no-op)
local schedule, due, running, history, events, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                                        KEYS[5], KEYS[6]
local queued, stale = KEYS[7], KEYS[8]
local id, job, version, next_fire, next_score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, now_score, outcome, dropped = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local maxlen, err, resumed_at, stale_by = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
local state = redis.call('HGET', schedule, 'state')
local fire = redis.call('HGET', schedule, 'fire_at')
redis.call('HDEL', schedule, unpack(RUN_FIELDS))
redis.call('HSET', schedule, 'last_result', outcome, 'last_run_at', now, 'attempt', 1)
redis.call('ZREM', running, id)
redis.call('ZREM', queued, id)
if state ~= 'running' then
  redis.call('ZREM', stale, id)
elseif outcome == 'succeeded' then
  redis.call('ZADD', stale, stale_by, id)
end
if outcome == 'succeeded' then redis.call('HSET', schedule, 'last_success_at', now) end
for i = 14, #ARGV, 2 do redis.call('HINCRBY', stats, ARGV[i], ARGV[i + 1]) end  -- metrics
local entry = {'event', outcome, 'fire_at', fire, 'job_id', job, 'at', now}
if err ~= '' then
  table.insert(entry, 'error'); table.insert(entry, err)
  redis.call('HSET', schedule, 'last_error', err)  -- why it gave up, for ls and check
end
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', unpack(entry))
if redis.call('HGET', schedule, 'version') ~= version
    or (redis.call('HGET', schedule, 'resumed_at') or '') ~= resumed_at then
  if state ~= 'running' then  -- paused: resume recomputes the fire
    redis.call('HSET', schedule, 'fire_at', '')
    return 3
  end
  redis.call('HSET', schedule, 'state', 'due', 'fire_at', '')
  wake_if_earlier(due, events, now_score)
  redis.call('ZADD', due, now_score, id)
  return 2
end
if tonumber(dropped) > 0 then
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'missed',
             'count', dropped, 'next_fire_at', next_fire, 'at', now)
end
if state ~= 'running' then  -- paused: the pending fire, from which resume counts the skipped
  redis.call('HSET', schedule, 'fire_at', next_fire)
  return 3
end
redis.call('HSET', schedule, 'state', 'due', 'fire_at', next_fire)
wake_if_earlier(due, events, next_score)
redis.call('ZADD', due, next_score, id)
return 1
"""
)

RETRY = (
    WAKE_IF_EARLIER
    + RUN_FIELDS_LUA
    + """
-- The run of a job failed and will be retried: the fire stays pending, due again at
-- the back-off score, attempt + 1. Compare-and-set on the in-flight job id.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the running zset
-- KEYS[4] - its history stream
-- KEYS[5] - the events channel
-- KEYS[6] - the queued zset
-- KEYS[7] - the stale zset
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - the retry's due score
-- ARGV[4] - the retry's time, ISO
-- ARGV[5] - now, ISO
-- ARGV[6] - error text
-- ARGV[7] - history maxlen
-- ARGV[8] - pause instead of retrying (Flag: '1' | '0')
-- returns (RetryReply) 1 retry scheduled, 3 paused, 0 not this schedule's run in
-- flight (no-op)
local schedule, due, running, history, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local queued, stale = KEYS[6], KEYS[7]
local id, job, retry_score, retry_at, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local err, maxlen, pause = ARGV[6], ARGV[7], ARGV[8]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
local state = redis.call('HGET', schedule, 'state')
local fire = redis.call('HGET', schedule, 'fire_at')
redis.call('HDEL', schedule, unpack(RUN_FIELDS))
local attempt = redis.call('HINCRBY', schedule, 'attempt', 1)
redis.call('HSET', schedule, 'last_result', 'failed', 'last_run_at', now, 'last_error', err)
redis.call('ZREM', running, id)
redis.call('ZREM', queued, id)
local paused = state ~= 'running' or pause == '1'
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'failed', 'fire_at', fire,
           'job_id', job, 'error', err, 'next_attempt', attempt,
           'retry_at', paused and '' or retry_at, 'at', now)
if paused then
  redis.call('HSET', schedule, 'state', 'paused')
  redis.call('ZREM', stale, id)
  return 3
end
redis.call('HSET', schedule, 'state', 'due')
wake_if_earlier(due, events, retry_score)
redis.call('ZADD', due, retry_score, id)
return 1
"""
)

NUDGE = """
-- A worker saw a job fail: bring the leader's watchdog look forward to now, so the
-- retry is decided at once rather than at the next scheduled look.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the running zset
-- KEYS[3] - the events channel
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id that failed
-- ARGV[3] - now, score
-- returns (NudgeReply) 1 nudged, 0 not this schedule's run in flight
local schedule, running, events = KEYS[1], KEYS[2], KEYS[3]
local id, job, now_score = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
redis.call('ZADD', running, 'XX', now_score, id)
redis.call('PUBLISH', events, 'wake')
return 1
"""

START = """
-- A worker began the run (or the watchdog saw RQ say so): record when and who, and
-- the run is no longer queued. Compare-and-set on the in-flight job id; the first
-- mark stands (the worker's own, from Redis time, beats the watchdog's later look).
-- KEYS[1] - the schedule hash
-- KEYS[2] - the queued zset
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - when it started, ISO
-- ARGV[4] - the worker's name
-- returns (StartReply) 1 marked, 0 not this schedule's run in flight or already marked
local schedule, queued = KEYS[1], KEYS[2]
local id, job, started, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
if redis.call('HEXISTS', schedule, 'started_at') == 1 then return 0 end
redis.call('HSET', schedule, 'started_at', started, 'worker', worker)  -- STARTED_FIELDS
redis.call('ZREM', queued, id)
return 1
"""

MARK_BROKEN = (
    RUN_FIELDS_LUA
    + """
-- A definition that cannot be decoded or computed: out of both zsets, state 'broken'
-- with its error, visible in `rqbeat ls`. Fixed by upserting a valid definition.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the running zset
-- KEYS[4] - its history stream
-- KEYS[5] - the queued zset
-- KEYS[6] - the stale zset
-- KEYS[7] - the broken set
-- ARGV[1] - the schedule id
-- ARGV[2] - error text
-- ARGV[3] - now, ISO
-- ARGV[4] - history maxlen
-- returns (MarkBrokenReply) 1 marked, 0 the key is not a hash (only taken out of the
-- zsets)
local schedule, due, running, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local queued, stale, broken = KEYS[5], KEYS[6], KEYS[7]
local id, err, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('ZREM', due, id)
redis.call('ZREM', running, id)
redis.call('ZREM', queued, id)
redis.call('ZREM', stale, id)  -- broken is a finding of its own
if redis.call('TYPE', schedule)['ok'] ~= 'hash' then return 0 end
redis.call('SADD', broken, id)
redis.call('HSET', schedule, 'state', 'broken', 'error', err, 'updated_at', now)
-- a late ack of an old run must not touch a schedule repaired in the meantime
redis.call('HDEL', schedule, unpack(RUN_FIELDS))
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'broken', 'error', err,
           'at', now)
return 1
"""
)
