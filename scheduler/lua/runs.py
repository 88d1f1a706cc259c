"""The end of a run: ack, retry, nudge; its start; a schedule marked broken; the
alerts these transitions raise and clear."""

from __future__ import annotations

from scheduler.lua.backfills import RECORD_SUCCESS_LUA
from scheduler.lua.common import COMPLETE_LUA, ISO_NOW_LUA, RUN_FIELDS_LUA, WAKE_IF_EARLIER
from scheduler.protocol import (
    ALERTS_MAXLEN,
    NO_FIRE,
    RUNS_DONE_FIELD,
    STARTED_NOW,
    AlertKind,
    CompletedBy,
    SkipReason,
)

#: Pushes an alert event onto the alerts list, atomically with the transition it
#: reports: kind (AlertKind) is the condition, recovered says it cleared. The leader
#: drains the list (scheduler.engine.alerts), woken by the publish on the channel of
#: the list's name (so it need not poll). Capped, so a namespace nobody drains (no
#: leader) cannot fill Redis.
ALERT_LUA = (
    f"""
local ALERTS_MAXLEN = {ALERTS_MAXLEN}
local GAVE_UP = '{AlertKind.GAVE_UP}'
"""
    + """
local function alert(list, kind, id, fire, job, detail, now, recovered)
  redis.call('RPUSH', list, cjson.encode({kind = kind, schedule = id, fire_at = fire or '',
                                          job_id = job or '', detail = detail or '', at = now,
                                          recovered = recovered}))
  redis.call('LTRIM', list, -ALERTS_MAXLEN, -1)
  redis.call('PUBLISH', list, 'alert')
end
-- A run's end for good, in the schedule's failure bookkeeping: a success clears the
-- failures and raises the recovery of an open alert; a give-up counts a failure and
-- raises gave_up. Shared by every ack (single runs and allow_all runs).
local function succeeded_again(schedule, failing, alerts, id, fire, job, now)
  local failures, alerted = unpack(redis.call('HMGET', schedule, 'failures', 'alerted'))
  if failures then
    redis.call('HDEL', schedule, 'failures')
    redis.call('ZREM', failing, id)
  end
  if alerted then  -- the first success after a give-up, a break or a pause
    redis.call('HDEL', schedule, 'alerted')
    alert(alerts, alerted, id, fire, job, 'the first run since succeeded', now, true)
  end
end
local function gave_up(schedule, failing, alerts, id, fire, job, err, now)
  redis.call('ZADD', failing, redis.call('HINCRBY', schedule, 'failures', 1), id)
  redis.call('HSET', schedule, 'alerted', GAVE_UP)
  alert(alerts, GAVE_UP, id, fire, job, err, now, false)
end
"""
)

#: The five ARGV of ACK and RETRY from ARGV[i]: the run's start and end (ISO, '' when
#: unknown: a plain rq worker reports no end), its worker, its lateness (ms from fire
#: to start, ''), and whether the schedule exports its own series (Flag).
RUN_TIMES_HEADER = "started_at, ended_at, worker, lateness_ms, metered"

#: Adds the run's times (ARGV[i..i+4], RUN_TIMES_HEADER) to a history entry and, for a
#: metered schedule, its lateness to the schedule's fields (both written by the caller,
#: in the calls it makes anyway: the ack is benchmarked); keeps the schedule's
#: metered-set membership in step with its definition (a flag in the definition: the
#: ack keeps the set true).
RUN_TIMES_LUA = """
local function run_times(metered, id, entry, fields, i)
  local started, ended, worker, lateness, meter = ARGV[i], ARGV[i + 1], ARGV[i + 2],
                                                  ARGV[i + 3], ARGV[i + 4]
  if started ~= '' then
    for _, v in ipairs({'started_at', started, 'worker', worker}) do table.insert(entry, v) end
  end
  if ended ~= '' then table.insert(entry, 'ended_at'); table.insert(entry, ended) end
  if meter ~= '1' then
    redis.call('SREM', metered, id)
    return
  end
  redis.call('SADD', metered, id)
  if lateness ~= '' then table.insert(fields, 'lateness_ms'); table.insert(fields, lateness) end
end
"""

ACK = (
    WAKE_IF_EARLIER
    + RUN_FIELDS_LUA
    + ALERT_LUA
    + RUN_TIMES_LUA
    + COMPLETE_LUA
    + RECORD_SUCCESS_LUA
    + f"""
local NO_FIRE, RUNS_DONE, EXCLUDED = '{NO_FIRE}', '{RUNS_DONE_FIELD}', '{SkipReason.EXCLUDED}'
local BY_MAX_RUNS, BY_END_AT = '{CompletedBy.MAX_RUNS}', '{CompletedBy.END_AT}'
"""
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
-- KEYS[9] - the alerts list
-- KEYS[10] - the failing zset
-- KEYS[11] - the metered set
-- KEYS[12] - the succeeded zset (what a backfill skips)
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - the version the next fire was computed from
-- ARGV[4] - the next fire, ISO, or NO_FIRE (past end_at: the schedule completes)
-- ARGV[5] - the next due score
-- ARGV[6] - now, ISO
-- ARGV[7] - now, score
-- ARGV[8] - outcome (AckOutcome: 'succeeded' | 'gave_up')
-- ARGV[9] - fires dropped by the misfire policy
-- ARGV[10] - history maxlen
-- ARGV[11] - error text (gave_up) or ''
-- ARGV[12] - resumed_at the next fire was computed from ('' = none)
-- ARGV[13] - when the schedule counts as stale without another success, score
-- ARGV[14..18] - the run's times (RUN_TIMES_HEADER)
-- ARGV[19] - max_runs of the definition ('' = none): successes are counted in RUNS_DONE
-- ARGV[20] - fires an exclusion skipped before the next fire (0 = none)
-- ARGV[21] - the first of them, ISO ('')
-- ARGV[22] - the fire that ran, epoch ms
-- ARGV[23] - the trigger's fire after it, epoch ms
-- ARGV[24..] - (field, increment) pairs for the stats hash
-- returns (AckReply) 1 re-armed, 2 definition changed or resumed meanwhile (due now,
-- fire recomputed by the leader), 3 paused (left idle), 4 completed (max_runs reached,
-- or no next fire), 0 not this schedule's run in flight (no-op)
local schedule, due, running, history, events, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                                        KEYS[5], KEYS[6]
local queued, stale, alerts, failing, metered = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local id, job, version, next_fire, next_score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, now_score, outcome, dropped = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local maxlen, err, resumed_at, stale_by = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local max_runs, excluded, first_excluded = ARGV[19], ARGV[20], ARGV[21]
local succeeded, fire_ms, expect = KEYS[12], ARGV[22], ARGV[23]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
local state = redis.call('HGET', schedule, 'state')
local fire = redis.call('HGET', schedule, 'fire_at')
redis.call('HDEL', schedule, unpack(RUN_FIELDS))
local entry = {'event', outcome, 'fire_at', fire, 'job_id', job, 'at', now}
local fields = {'last_result', outcome, 'last_run_at', now}
redis.call('HDEL', schedule, 'attempt')
run_times(metered, id, entry, fields, 14)
if outcome == 'succeeded' then table.insert(fields, 'last_success_at'); table.insert(fields, now) end
redis.call('HSET', schedule, unpack(fields))
redis.call('ZREM', running, id)
redis.call('ZREM', queued, id)
if state ~= 'running' then
  redis.call('ZREM', stale, id)
elseif outcome == 'succeeded' then
  redis.call('ZADD', stale, stale_by, id)
end
for i = 24, #ARGV, 2 do redis.call('HINCRBY', stats, ARGV[i], ARGV[i + 1]) end  -- metrics
if err ~= '' then
  table.insert(entry, 'error'); table.insert(entry, err)
  redis.call('HSET', schedule, 'last_error', err)  -- why it gave up, for ls and check
end
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', unpack(entry))
local runs_done = 0
if outcome == 'succeeded' and max_runs ~= '' then
  runs_done = redis.call('HINCRBY', schedule, RUNS_DONE, 1)
end
if outcome == 'succeeded' then
  record_success(succeeded, fire_ms, expect)
  succeeded_again(schedule, failing, alerts, id, fire, job, now)
else
  gave_up(schedule, failing, alerts, id, fire, job, err, now)
end
-- counted against the definition the run was dispatched from: an edit that raises
-- max_runs re-arms a completed schedule (UPSERT)
if max_runs ~= '' and runs_done >= tonumber(max_runs) then
  complete(schedule, due, stale, history, id, maxlen, now, BY_MAX_RUNS)
  return 4
end
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
if tonumber(excluded) > 0 then
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'skipped', 'reason', EXCLUDED,
             'count', excluded, 'fire_at', first_excluded, 'at', now)
end
if next_fire == NO_FIRE then
  complete(schedule, due, stale, history, id, maxlen, now, BY_END_AT)
  return 4
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
    + ALERT_LUA
    + RUN_TIMES_LUA
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
-- KEYS[8] - the alerts list
-- KEYS[9] - the failing zset
-- KEYS[10] - the metered set
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - the retry's due score
-- ARGV[4] - the retry's time, ISO
-- ARGV[5] - now, ISO
-- ARGV[6] - error text
-- ARGV[7] - history maxlen
-- ARGV[8] - pause instead of retrying (Flag: '1' | '0')
-- ARGV[9..13] - the run's times (RUN_TIMES_HEADER)
-- returns (RetryReply) 1 retry scheduled, 3 paused, 0 not this schedule's run in
-- flight (no-op)
local schedule, due, running, history, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local queued, stale, alerts, failing, metered = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local id, job, retry_score, retry_at, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local err, maxlen, pause = ARGV[6], ARGV[7], ARGV[8]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
local state = redis.call('HGET', schedule, 'state')
local fire = redis.call('HGET', schedule, 'fire_at')
local entry = {'event', 'failed', 'fire_at', fire, 'job_id', job, 'error', err}
local fields = {'last_result', 'failed', 'last_run_at', now, 'last_error', err}
run_times(metered, id, entry, fields, 9)
redis.call('HDEL', schedule, unpack(RUN_FIELDS))
local attempt = redis.call('HINCRBY', schedule, 'attempt', 1)
redis.call('HSET', schedule, unpack(fields))
redis.call('ZADD', failing, redis.call('HINCRBY', schedule, 'failures', 1), id)
redis.call('ZREM', running, id)
redis.call('ZREM', queued, id)
local paused = state ~= 'running' or pause == '1'
for _, v in ipairs({'next_attempt', attempt, 'retry_at', paused and '' or retry_at, 'at', now}) do
  table.insert(entry, v)
end
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', unpack(entry))
if paused then
  redis.call('HSET', schedule, 'state', 'paused')
  redis.call('ZREM', stale, id)
  if state == 'running' then  -- pause_on_failure (not a pause by hand meanwhile)
    redis.call('HSET', schedule, 'alerted', 'paused')
    alert(alerts, 'paused', id, fire, job, err, now, false)
  end
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
-- ARGV[4] - now, epoch ms (the run's end, for its history entry)
-- returns (NudgeReply) 1 nudged, 0 not this schedule's run in flight
local schedule, running, events = KEYS[1], KEYS[2], KEYS[3]
local id, job, now_score, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
redis.call('HSET', schedule, 'ended_ms', now_ms)  -- ENDED_FIELD
redis.call('ZADD', running, 'XX', now_score, id)
redis.call('PUBLISH', events, 'wake')
return 1
"""

START = (
    f"""
local STARTED_NOW = '{STARTED_NOW}'
"""
    + ISO_NOW_LUA
    + """
-- A worker began the run (or the watchdog saw RQ say so): record when and who, and
-- the run is no longer queued. Compare-and-set on the in-flight job id; the first
-- mark stands (the worker's own, from Redis time, beats the watchdog's later look).
-- KEYS[1] - the schedule hash
-- KEYS[2] - the queued zset
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - when it started, ISO; STARTED_NOW: now, by Redis TIME
-- ARGV[4] - the worker's name
-- returns (StartReply) 1 marked, 0 not this schedule's run in flight or already marked
local schedule, queued = KEYS[1], KEYS[2]
local id, job, started, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
if redis.call('HEXISTS', schedule, 'started_at') == 1 then return 0 end
if started == STARTED_NOW then started = iso_now() end
redis.call('HSET', schedule, 'started_at', started, 'worker', worker)  -- STARTED_FIELDS
redis.call('ZREM', queued, id)
return 1
"""
)

MARK_BROKEN = (
    RUN_FIELDS_LUA
    + ALERT_LUA
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
-- KEYS[8] - the alerts list
-- ARGV[1] - the schedule id
-- ARGV[2] - error text
-- ARGV[3] - now, ISO
-- ARGV[4] - history maxlen
-- returns (MarkBrokenReply) 1 marked, 0 the key is not a hash (only taken out of the
-- zsets)
local schedule, due, running, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local queued, stale, broken, alerts = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
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
redis.call('HSET', schedule, 'alerted', 'broken')
alert(alerts, 'broken', id, false, false, err, now, false)
return 1
"""
)

ALERT_RECORD = """
-- An alert's delivery, in its schedule's history (alert_sent / alert_failed); nothing
-- for a schedule removed meanwhile (its history went with it).
-- KEYS[1] - the schedule hash
-- KEYS[2] - its history stream
-- ARGV[1] - history maxlen
-- ARGV[2..] - the entry's field/value pairs
-- returns (AlertRecordReply) 1 recorded, 0 no such schedule
local schedule, history, maxlen = KEYS[1], KEYS[2], ARGV[1]
if redis.call('EXISTS', schedule) == 0 then return 0 end
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, 2))
return 1
"""
