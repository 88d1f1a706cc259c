"""Every state transition of a schedule, as one Lua script.

A schedule is in exactly one of: ``due`` (in the due zset), ``running`` (in the
running zset, a job in flight), ``paused`` or ``broken`` (in neither). A paused
schedule whose last run is still in flight stays in the running zset until that run
is acknowledged. Dispatch reads a batch with :data:`DUE_READ` and writes it, RQ jobs
included, with :data:`DISPATCH` (see :mod:`scheduler.engine.dispatch`).

Conventions: scores are epoch seconds (ms precision); ``fire_at`` is the ISO time
of the pending (or in-flight) fire, and ``''`` means "recompute from the due score"
(set when a definition changed under an in-flight run). Every edit INCRs the
revision key, which dispatch WATCHes, and publishes on the events channel so the
leader re-plans its wait at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.typing import KeyT

from scheduler.protocol import ALERTS_MAXLEN, DUE_FIELDS, RUN_FIELDS, UPSERT_READ_FIELDS, lua_list

C = TypeVar("C")

# The fields of a run in flight, cleared together when the run ends.
_RUN_FIELDS = lua_list("RUN_FIELDS", RUN_FIELDS)

# Publishes 'wake' when score ARGV is earlier than anything already due, so the leader
# re-plans; otherwise its current wait already covers the new score.
_WAKE_IF_EARLIER = """
local function wake_if_earlier(due, events, score)
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] == nil or tonumber(score) < tonumber(first[2]) then
    redis.call('PUBLISH', events, 'wake')
  end
end
"""

# Pushes an alert event onto the alerts list, atomically with the transition it
# reports: kind (AlertKind) is the condition, recovered says it cleared. The leader
# drains the list (scheduler.engine.alerts). Capped, so a namespace nobody drains (no
# leader) cannot fill Redis.
_ALERT = (
    f"""
local ALERTS_MAXLEN = {ALERTS_MAXLEN}
"""
    + """
local function alert(list, kind, id, fire, job, detail, now, recovered)
  redis.call('RPUSH', list, cjson.encode({kind = kind, schedule = id, fire_at = fire or '',
                                          job_id = job or '', detail = detail or '', at = now,
                                          recovered = recovered}))
  redis.call('LTRIM', list, -ALERTS_MAXLEN, -1)
end
"""
)

#: The five ARGV of ACK and RETRY from ARGV[i]: the run's start and end (ISO, '' when
#: unknown: a plain rq worker reports neither), its worker, its lateness (ms from fire
#: to start, ''), and whether the schedule exports its own series (Flag).
RUN_TIMES_HEADER = "started_at, ended_at, worker, lateness_ms, metered"

# Adds the run's times (ARGV[i..i+4], RUN_TIMES_HEADER) to a history entry and, for a
# metered schedule, its lateness to the schedule's fields (both written by the caller,
# in the calls it makes anyway: the ack is benchmarked); keeps the schedule's
# metered-set membership in step with its definition (a flag in the definition: the
# ack keeps the set true). Returns whether the schedule is metered: only those keep
# the fields of their own series (memory per schedule stays flat for the others).
_RUN_TIMES = """
local function run_times(metered, id, entry, fields, i)
  local started, ended, worker, lateness, meter = ARGV[i], ARGV[i + 1], ARGV[i + 2],
                                                  ARGV[i + 3], ARGV[i + 4]
  if started ~= '' then
    for _, v in ipairs({'started_at', started, 'worker', worker}) do table.insert(entry, v) end
  end
  if ended ~= '' then table.insert(entry, 'ended_at'); table.insert(entry, ended) end
  if meter ~= '1' then
    redis.call('SREM', metered, id)
    return false
  end
  redis.call('SADD', metered, id)
  if lateness ~= '' then table.insert(fields, 'lateness_ms'); table.insert(fields, lateness) end
  return true
end
"""

UPSERT_READ = (
    lua_list("FIELDS", UPSERT_READ_FIELDS)
    + """
-- What an upsert decides from, for many schedules in one round trip.
-- ARGV[1] - the schedule key prefix
-- ARGV[2..] - the schedule ids
-- returns per id: version, definition, state (UPSERT_READ_FIELDS; a key of another
-- type, set by hand, reads as state 'broken': the upsert replaces it)
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local row = redis.pcall('HMGET', prefix .. ARGV[i], unpack(FIELDS))
  if row.err then row = {false, false, 'broken'} end
  for j = 1, #FIELDS do out[#out + 1] = row[j] or false end
end
return out
"""
)

UPSERT = """
-- Create or replace many schedules; one revision bump and one publish for the whole
-- call.
-- KEYS[1] - the due zset
-- KEYS[2] - the ids set
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- ARGV[1] - the schedule key prefix
-- ARGV[2] - now, ISO
-- then 5 per schedule, from ARGV[i] (i = 3, 8, ...):
-- ARGV[i] - the schedule id
-- ARGV[i + 1] - its definition, JSON
-- ARGV[i + 2] - the version read before (0 = new)
-- ARGV[i + 3] - fire_at ISO of the recomputed next fire, or '' to keep the pending fire
-- ARGV[i + 4] - its due score
-- returns per schedule the new version, or -1 (UpsertReply.CONFLICT) when the version
-- moved since it was read (re-read, retry)
local due, ids, revision, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, now = ARGV[1], ARGV[2]
local function upsert(key, id, definition, read, fire, score)
  if redis.call('TYPE', key)['ok'] ~= 'hash' then
    if tonumber(read) ~= 0 then return -1 end
    redis.call('DEL', key)  -- none, or a key of another type set by hand: replaced
  end
  local current = tonumber(redis.call('HGET', key, 'version') or '0')
  if current ~= tonumber(read) then return -1 end
  local version = current + 1
  redis.call('HSET', key, 'definition', definition, 'version', version, 'updated_at', now)
  local state = redis.call('HGET', key, 'state')
  if current == 0 or ((state == 'due' or state == 'broken') and fire ~= '') then
    redis.call('HSET', key, 'state', 'due', 'fire_at', fire, 'attempt', 1)
    redis.call('HDEL', key, 'error')
    redis.call('ZADD', due, score, id)
    redis.call('SADD', ids, id)
  end
  -- running: the in-flight run finishes; its ack sees the new version and re-arms from
  -- the new definition. paused: stays paused; resume computes the next fire.
  return version
end
local out, written = {}, false
for i = 3, #ARGV, 5 do
  local version = upsert(prefix .. ARGV[i], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
                         ARGV[i + 4])
  written = written or version > 0
  out[#out + 1] = version
end
if written then
  redis.call('INCR', revision)
  redis.call('PUBLISH', events, 'edit')
end
return out
"""

REMOVE = """
-- Delete a schedule and its history. An in-flight run finishes; its ack finds no
-- schedule and does nothing.
-- KEYS[1] - the schedule hash
-- KEYS[2] - its history stream
-- KEYS[3] - the due zset
-- KEYS[4] - the running zset
-- KEYS[5] - the ids set
-- KEYS[6] - the revision counter
-- KEYS[7] - the events channel
-- KEYS[8] - the failing zset
-- KEYS[9] - the metered set
-- ARGV[1] - the schedule id
-- returns (RemoveReply) 1 the schedule existed, 0 it did not
local schedule, history, due, running = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ids, revision, events, failing, metered = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local id = ARGV[1]
local existed = redis.call('DEL', schedule)
redis.call('DEL', history)
redis.call('ZREM', due, id)
redis.call('ZREM', running, id)
redis.call('ZREM', failing, id)
redis.call('SREM', metered, id)
existed = existed + redis.call('SREM', ids, id)
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'edit')
if existed > 0 then return 1 end
return 0
"""

PAUSE = """
-- Stop firing; a run in flight finishes (its ack leaves the schedule paused).
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- KEYS[5] - its history stream
-- ARGV[1] - the schedule id
-- ARGV[2] - now, ISO
-- ARGV[3] - history maxlen
-- returns (PauseReply) 1 paused, 0 already paused, -1 no such schedule
local schedule, due, revision, events, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, now, maxlen = ARGV[1], ARGV[2], ARGV[3]
local state = redis.call('HGET', schedule, 'state')
if not state then return -1 end
if state == 'paused' then return 0 end
redis.call('ZREM', due, id)
redis.call('HSET', schedule, 'state', 'paused', 'updated_at', now)
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'paused', 'at', now)
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'edit')
return 1
"""

RESUME = """
-- Fire again from now on: fires that passed while paused never run; each is recorded
-- as skipped. Compare-and-set on what the caller read, so the skipped fires it counted
-- are the ones that passed.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- KEYS[5] - its history stream
-- ARGV[1] - the schedule id
-- ARGV[2] - fire_at ISO of the next fire from now
-- ARGV[3] - its due score
-- ARGV[4] - now, ISO
-- ARGV[5] - history maxlen
-- ARGV[6] - the version as read
-- ARGV[7] - fire_at as read ('' = missing)
-- ARGV[8] - job_id as read ('' = no run in flight)
-- ARGV[9] - fires skipped (pending or passed while paused: never run)
-- ARGV[10] - the first of them, ISO
-- returns (ResumeReply) 1 resumed, 0 not paused, -1 no such schedule, -2 changed since
-- it was read (an ack, a failure or an edit: the skipped fires differ; re-read)
local schedule, due, revision, events, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, fire, score, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local read_version, read_fire, read_job = ARGV[6], ARGV[7], ARGV[8]
local skipped, first_skipped = ARGV[9], ARGV[10]
local state = redis.call('HGET', schedule, 'state')
if not state then return -1 end
if state ~= 'paused' then return 0 end
local function was(name, value) return (redis.call('HGET', schedule, name) or '') == value end
if not (was('version', read_version) and was('fire_at', read_fire) and was('job_id', read_job)) then
  return -2
end
if read_job ~= '' then
  -- its last run is still in flight: the ack re-arms it from the first fire after now
  redis.call('HSET', schedule, 'state', 'running', 'resumed_at', now, 'updated_at', now)
else
  redis.call('HSET', schedule, 'state', 'due', 'fire_at', fire, 'attempt', 1, 'updated_at', now)
  redis.call('ZADD', due, score, id)
end
if tonumber(skipped) > 0 then
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'skipped', 'count', skipped,
             'fire_at', first_skipped, 'at', now)
end
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'resumed', 'at', now)
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'edit')
return 1
"""

TRIGGER = """
-- Makes the schedule due now with fire = now; its regular fires carry on after.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- KEYS[5] - its history stream
-- ARGV[1] - the schedule id
-- ARGV[2] - now, ISO
-- ARGV[3] - now, score
-- ARGV[4] - history maxlen
-- returns (TriggerReply) 'triggered', 'not_found', or the state that prevents it
local schedule, due, revision, events, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, now, now_score, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local state = redis.call('HGET', schedule, 'state')
if not state then return 'not_found' end
if state ~= 'due' then return state end
redis.call('HSET', schedule, 'fire_at', now, 'attempt', 1, 'updated_at', now)
redis.call('ZADD', due, now_score, id)
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'triggered', 'at', now)
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'wake')
return 'triggered'
"""

ACK = (
    _WAKE_IF_EARLIER
    + _RUN_FIELDS
    + _ALERT
    + _RUN_TIMES
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
-- KEYS[7] - the alerts list
-- KEYS[8] - the failing zset
-- KEYS[9] - the metered set
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
-- ARGV[13..17] - the run's times (RUN_TIMES_HEADER)
-- ARGV[18..] - (field, increment) pairs for the stats hash
-- returns (AckReply) 1 re-armed, 2 definition changed or resumed meanwhile (due now,
-- fire recomputed by the leader), 3 paused (left idle), 0 not this schedule's run in
-- flight (no-op)
local schedule, due, running, history, events, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                                        KEYS[5], KEYS[6]
local alerts, failing, metered = KEYS[7], KEYS[8], KEYS[9]
local id, job, version, next_fire, next_score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, now_score, outcome, dropped = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local maxlen, err, resumed_at = ARGV[10], ARGV[11], ARGV[12]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
local state = redis.call('HGET', schedule, 'state')
local fire = redis.call('HGET', schedule, 'fire_at')
redis.call('HDEL', schedule, unpack(RUN_FIELDS))
local entry = {'event', outcome, 'fire_at', fire, 'job_id', job, 'at', now}
local fields = {'last_result', outcome, 'last_run_at', now, 'attempt', 1}
local meter = run_times(metered, id, entry, fields, 13)
if meter and outcome == 'succeeded' then
  table.insert(fields, 'last_success_at')
  table.insert(fields, now)
end
redis.call('HSET', schedule, unpack(fields))
redis.call('ZREM', running, id)
for i = 18, #ARGV, 2 do redis.call('HINCRBY', stats, ARGV[i], ARGV[i + 1]) end  -- metrics
if err ~= '' then table.insert(entry, 'error'); table.insert(entry, err) end
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', unpack(entry))
if outcome == 'succeeded' then
  local failures, alerted = unpack(redis.call('HMGET', schedule, 'failures', 'alerted'))
  if failures then
    redis.call('HDEL', schedule, 'failures')
    redis.call('ZREM', failing, id)
  end
  if alerted then  -- the first success after a give-up, a break or a pause
    redis.call('HDEL', schedule, 'alerted')
    alert(alerts, alerted, id, fire, job, 'the first run since succeeded', now, true)
  end
else
  redis.call('ZADD', failing, redis.call('HINCRBY', schedule, 'failures', 1), id)
  redis.call('HSET', schedule, 'alerted', 'gave_up')
  alert(alerts, 'gave_up', id, fire, job, err, now, false)
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
    _WAKE_IF_EARLIER
    + _RUN_FIELDS
    + _ALERT
    + _RUN_TIMES
    + """
-- The run of a job failed and will be retried: the fire stays pending, due again at
-- the back-off score, attempt + 1. Compare-and-set on the in-flight job id.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the running zset
-- KEYS[4] - its history stream
-- KEYS[5] - the events channel
-- KEYS[6] - the alerts list
-- KEYS[7] - the failing zset
-- KEYS[8] - the metered set
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
local alerts, failing, metered = KEYS[6], KEYS[7], KEYS[8]
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
local paused = state ~= 'running' or pause == '1'
for _, v in ipairs({'next_attempt', attempt, 'retry_at', paused and '' or retry_at, 'at', now}) do
  table.insert(entry, v)
end
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', unpack(entry))
if paused then
  redis.call('HSET', schedule, 'state', 'paused')
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
-- ARGV[4] - now, epoch ms (the run's end, kept for its history entry)
-- returns (NudgeReply) 1 nudged, 0 not this schedule's run in flight
local schedule, running, events = KEYS[1], KEYS[2], KEYS[3]
local id, job, now_score, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
redis.call('HSET', schedule, 'ended_ms', now_ms)
redis.call('ZADD', running, 'XX', now_score, id)
redis.call('PUBLISH', events, 'wake')
return 1
"""

MARK_BROKEN = (
    _RUN_FIELDS
    + _ALERT
    + """
-- A definition that cannot be decoded or computed: out of both zsets, state 'broken'
-- with its error, visible in `rqbeat ls`. Fixed by upserting a valid definition.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the running zset
-- KEYS[4] - its history stream
-- ARGV[1] - the schedule id
-- ARGV[2] - error text
-- ARGV[3] - now, ISO
-- KEYS[5] - the alerts list
-- ARGV[4] - history maxlen
-- returns (MarkBrokenReply) 1 marked, 0 the key is not a hash (only taken out of the
-- zsets)
local schedule, due, running, history, alerts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, err, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('ZREM', due, id)
redis.call('ZREM', running, id)
if redis.call('TYPE', schedule)['ok'] ~= 'hash' then return 0 end
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

STARTED = """
-- A workers.Worker started the run's job: record when (Redis time, so lateness never
-- depends on the worker's clock) and where. Compare-and-set on the in-flight job id.
-- KEYS[1] - the schedule hash
-- ARGV[1] - the job id
-- ARGV[2] - the worker's name
-- returns (StartedReply) 1 recorded, 0 not this schedule's run in flight
local schedule = KEYS[1]
local job, worker = ARGV[1], ARGV[2]
if redis.call('HGET', schedule, 'job_id') ~= job then return 0 end
local t = redis.call('TIME')
local ms = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
redis.call('HSET', schedule, 'started_ms', ms, 'worker', worker)
return 1
"""

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


DUE_READ = (
    lua_list("FIELDS", DUE_FIELDS)
    + """
-- One batch of due schedules with the hash fields dispatch decides from, plus the
-- lease and the revision the write is fenced with (one round trip).
-- KEYS[1] - the due zset
-- KEYS[2] - the leader lease
-- KEYS[3] - the revision counter
-- ARGV[1] - now, score
-- ARGV[2] - batch size
-- ARGV[3] - the schedule key prefix
-- returns {leader, revision, then per schedule: id, score, DUE_FIELDS...}
-- The hashes are named prefix .. id, not passed as KEYS: rqbeat does not run on Cluster.
local due, leader, revision = KEYS[1], KEYS[2], KEYS[3]
local now_score, batch, prefix = ARGV[1], ARGV[2], ARGV[3]
local out = {redis.call('GET', leader) or '', redis.call('GET', revision) or '0'}
local ready = redis.call('ZRANGEBYSCORE', due, '-inf', now_score, 'WITHSCORES', 'LIMIT', 0, batch)
for i = 1, #ready, 2 do
  local row = redis.pcall('HMGET', prefix .. ready[i], unpack(FIELDS))
  if row.err then row = {} end  -- not a hash: decided broken, not an error for the batch
  out[#out + 1] = ready[i]
  out[#out + 1] = ready[i + 1]
  for j = 1, #FIELDS do out[#out + 1] = row[j] or false end
end
return out
"""
)

DISPATCH = """
-- Write one decided batch: every run's RQ job (hash + RPUSH, as RQ writes them), the
-- schedule's in-flight state and history, and the reschedules -- or nothing at all.
-- KEYS[1] - the leader lease
-- KEYS[2] - the revision counter
-- KEYS[3] - the due zset
-- KEYS[4] - the running zset
-- KEYS[5] - RQ's queues set
-- ARGV[1] - our lease token
-- ARGV[2] - the revision the batch was read at
-- ARGV[3] - the schedule key prefix
-- ARGV[4] - the history key prefix
-- ARGV[5] - RQ's job key prefix
-- ARGV[6] - RQ's queue key prefix
-- ARGV[7] - now, ISO
-- ARGV[8] - the first watchdog look, score
-- ARGV[9] - the leader's epoch
-- ARGV[10] - history maxlen
-- ARGV[11] - the jobs' created_at/enqueued_at (RQ's format)
-- ARGV[12] - number of runs
-- ARGV[13] - number of reschedules
-- then ARGV[12] runs, 8 + n each, from ARGV[i] (i = 14 for the first):
-- ARGV[i] - the schedule id
-- ARGV[i + 1] - the fire, ISO
-- ARGV[i + 2] - the attempt
-- ARGV[i + 3] - the job id
-- ARGV[i + 4] - the queue
-- ARGV[i + 5] - fires dropped by the misfire policy
-- ARGV[i + 6] - the job's ttl, s (0 = none)
-- ARGV[i + 7] - n
-- ARGV[i + 8 .. i + 7 + n] - the job hash's field/value pairs (all but the two stamps)
-- then ARGV[13] reschedules, 4 each:
-- ARGV[i] - the schedule id
-- ARGV[i + 1] - the fire, ISO
-- ARGV[i + 2] - its due score
-- ARGV[i + 3] - fires dropped by the misfire policy
-- returns (DispatchReply) 1 written, -1 the lease is not ours (deposed: nothing
-- written), -2 an edit moved the revision since the read (re-read and decide again)
local leader, revision, due, running, queues_set = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, read_revision, sched, hist = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local job_prefix, queue_prefix, now, first_look = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local epoch, maxlen, stamp, n_runs, n_reschedules = ARGV[9], ARGV[10], ARGV[11], ARGV[12],
                                                    ARGV[13]
if redis.call('GET', leader) ~= token then return -1 end
if (redis.call('GET', revision) or '0') ~= read_revision then return -2 end
local queues = {}
local i = 14
for _ = 1, tonumber(n_runs) do
  local id, fire, attempt, job, queue, dropped, ttl, n = unpack(ARGV, i, i + 7)
  local last = i + 7 + tonumber(n)
  local job_key, queue_key = job_prefix .. job, queue_prefix .. queue
  redis.call('HSET', job_key, 'created_at', stamp, 'enqueued_at', stamp,
             unpack(ARGV, i + 8, last))
  if ttl ~= '0' then redis.call('EXPIRE', job_key, ttl) end
  if not queues[queue_key] then
    queues[queue_key] = true
    redis.call('SADD', queues_set, queue_key)
  end
  redis.call('RPUSH', queue_key, job)
  redis.call('ZREM', due, id)
  redis.call('ZADD', running, first_look, id)
  redis.call('HSET', sched .. id, 'state', 'running', 'fire_at', fire, 'attempt', attempt,
             'job_id', job, 'job_queue', queue, 'epoch', epoch, 'dispatched_at', now)  -- RUN_FIELDS
  if dropped ~= '0' then  -- the fires this run stands for (coalesce) or that were too old
    redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'missed',
               'fire_at', fire, 'count', dropped, 'at', now)
  end
  redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'dispatched',
             'fire_at', fire, 'job_id', job, 'attempt', attempt, 'epoch', epoch, 'at', now)
  i = last + 1
end
for _ = 1, tonumber(n_reschedules) do
  local id, fire, score, dropped = unpack(ARGV, i, i + 3)
  redis.call('ZADD', due, score, id)
  redis.call('HSET', sched .. id, 'fire_at', fire, 'attempt', 1)
  if dropped ~= '0' then
    redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'missed',
               'fire_at', fire, 'count', dropped, 'next_fire_at', fire, 'at', now)
  end
  i = i + 4
end
return 1
"""


class Scripts:
    """The scripts registered on one client (EVALSHA, loaded on first use)."""

    def __init__(self, conn: Redis) -> None:
        self.upsert_read = conn.register_script(UPSERT_READ)
        self.upsert = conn.register_script(UPSERT)
        self.remove = conn.register_script(REMOVE)
        self.pause = conn.register_script(PAUSE)
        self.resume = conn.register_script(RESUME)
        self.trigger = conn.register_script(TRIGGER)
        self.ack = conn.register_script(ACK)
        self.retry = conn.register_script(RETRY)
        self.nudge = conn.register_script(NUDGE)
        self.started = conn.register_script(STARTED)
        self.alert_record = conn.register_script(ALERT_RECORD)
        self.mark_broken = conn.register_script(MARK_BROKEN)
        self.due_read = conn.register_script(DUE_READ)
        self.dispatch = conn.register_script(DISPATCH)


def run(script: Script, keys: Sequence[KeyT], args: Sequence[Any], client: Any = None) -> Any:
    """Call a script; a typed seam over redis-py's loosely typed ``Script.__call__``."""
    return script(keys=list(keys), args=list(args), client=client)


class Pending:
    """A script call sent but not answered yet, so the caller can work while Redis runs
    it (dispatch decides the next batch meanwhile). :meth:`result` collects the reply;
    :meth:`abandon` drops the call's connection when the caller gives up on it."""

    def __init__(self, conn: Redis, script: Script, keys: Sequence[KeyT], args: Sequence[Any]) -> None:
        self._client, self._script, self._keys, self._args = conn, script, keys, args
        self._pool = conn.connection_pool
        self._conn: Any = self._pool.get_connection()
        try:
            self._conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except BaseException:
            self.abandon()
            raise

    def result(self) -> Any:
        try:
            reply = self._conn.read_response()
        except NoScriptError:  # not run at all (Redis restarted): load it and run it now
            self._pool.release(self._conn)
            return run(self._script, self._keys, self._args, self._client)
        except BaseException:
            self.abandon()
            raise
        self._pool.release(self._conn)
        return reply

    def abandon(self) -> None:
        self._conn.disconnect()
        self._pool.release(self._conn)


def pipelined(
    conn: Redis,
    script: Script,
    keys: Sequence[KeyT],
    batches: Iterable[tuple[C, Sequence[Any] | None]],
    settle: Callable[[C, Any], bool],
) -> None:
    """Call ``script`` once per batch, with the next batch prepared while Redis runs
    the last one: ``batches`` is consumed lazily, so its Python work overlaps Redis's.
    Each batch's reply goes to ``settle(context, reply)`` in order, before the next
    batch is sent; ``settle`` returning False stops there (the rest is never sent).
    A batch whose arguments are None is not sent; its reply is None."""
    in_flight: tuple[C, Pending | None] | None = None
    try:
        for context, args in batches:
            if in_flight is not None:
                done, call = in_flight
                in_flight = None
                if not settle(done, None if call is None else call.result()):
                    return
            in_flight = (context, None if args is None else Pending(conn, script, keys, args))
        if in_flight is not None:
            done, call = in_flight
            in_flight = None
            settle(done, None if call is None else call.result())
    finally:
        if in_flight is not None and in_flight[1] is not None:
            in_flight[1].abandon()
