"""``overlap = allow_all``: the runs of one schedule in flight side by side.

Each run has its own record, ``<ns>:runs:<id>`` field ``<fire ms>`` (JSON: job id,
attempt, epoch, dispatched_at, queue, state), and its own member ``<id>:<fire ms>`` in
``<ns>:concurrent``, scored by when the leader looks at it next. DISPATCH writes the
first attempt (a *spawn*); these scripts end a run (ack, give up), schedule its retry,
enqueue the retry (fenced) and drop a run whose schedule is gone. Every one is a
compare-and-set on the record's job id (and state), so a late or duplicate ack, a
stale watchdog verdict or a deposed leader writes nothing. The schedule's
``runs_in_flight`` field is the record count, rewritten by each of them.

A run's end makes a schedule that waits for a free slot (due score SLOT_WAIT_SCORE)
due now: the leader decides its pending fire again (the misfire policy for a late one).
"""

from __future__ import annotations

from scheduler.lua.backfills import RECORD_SUCCESS_LUA
from scheduler.lua.runs import ALERT_LUA
from scheduler.protocol import IN_FLIGHT_FIELD, SLOT_WAIT_SCORE, RunState

#: ``run_record(...)``: one run's JSON record; ``run_of(runs, fire_ms, job)``: the
#: record of ``fire_ms`` when it is run ``job`` (any job when ``job`` is ''), else nil;
#: ``run_ended(...)``: the record gone (and its member of the queued zset: an
#: allow_all run is ``<id>:<fire ms>`` there while it waits in its RQ queue), the count
#: rewritten, a waiting fire woken.
RUN_RECORD_LUA = (
    f"""
local RUN_RUNNING, RUN_RETRY = '{RunState.RUNNING}', '{RunState.RETRY}'
local IN_FLIGHT_FIELD, SLOT_WAIT_SCORE = '{IN_FLIGHT_FIELD}', {SLOT_WAIT_SCORE}
"""
    + """
local function run_record(job, attempt, epoch, at, queue, state)
  return cjson.encode({job_id = job, attempt = tonumber(attempt), epoch = tonumber(epoch),
                       dispatched_at = at, queue = queue, state = state})
end
local function run_of(runs, fire_ms, job)
  local raw = redis.call('HGET', runs, fire_ms)
  if not raw then return nil end
  local run = cjson.decode(raw)
  if job ~= '' and run.job_id ~= job then return nil end
  return run
end
local function run_ended(runs, concurrent, queued, schedule, due, events, id, fire_ms, now_score)
  redis.call('HDEL', runs, fire_ms)
  redis.call('ZREM', concurrent, id .. ':' .. fire_ms)
  redis.call('ZREM', queued, id .. ':' .. fire_ms)
  if redis.call('EXISTS', schedule) == 0 then return end
  redis.call('HSET', schedule, IN_FLIGHT_FIELD, redis.call('HLEN', runs))
  local waiting = redis.call('ZSCORE', due, id)
  if waiting and tonumber(waiting) >= SLOT_WAIT_SCORE then
    redis.call('ZADD', due, now_score, id)
    redis.call('PUBLISH', events, 'wake')
  end
end
"""
)

CONC_ACK = (
    RUN_RECORD_LUA
    + ALERT_LUA
    + RECORD_SUCCESS_LUA
    + """
-- An allow_all run is over for good: it succeeded, or failed and is given up
-- (max_attempts). Its record goes; a fire waiting for a slot is woken.
-- KEYS[1] - the schedule hash
-- KEYS[2] - its runs hash
-- KEYS[3] - the concurrent zset
-- KEYS[4] - the due zset
-- KEYS[5] - its history stream
-- KEYS[6] - the events channel
-- KEYS[7] - the stale zset
-- KEYS[8] - the stats hash (scheduler.engine.clusterstats)
-- KEYS[9] - the alerts list
-- KEYS[10] - the failing zset
-- KEYS[11] - its succeeded zset (what a backfill skips)
-- KEYS[12] - the queued zset
-- ARGV[1] - the schedule id
-- ARGV[2] - the fire, epoch ms
-- ARGV[3] - the job id of the run
-- ARGV[4] - outcome (AckOutcome: 'succeeded' | 'gave_up')
-- ARGV[5] - error text (gave_up) or ''
-- ARGV[6] - now, ISO
-- ARGV[7] - now, score
-- ARGV[8] - history maxlen
-- ARGV[9] - the fire, ISO
-- ARGV[10] - who: 'worker' | 'watchdog'
-- ARGV[11] - when the schedule counts as stale without another success, score
-- ARGV[12] - the trigger's fire after it, epoch ms (the succeeded record chains on it)
-- ARGV[13..] - (field, increment) pairs for the stats hash
-- returns (ConcurrentReply) 1 recorded, 0 not this run in flight (nothing written)
local schedule, runs, concurrent, due, history, events, stale = KEYS[1], KEYS[2], KEYS[3],
                                                                 KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local stats, alerts, failing, succeeded, queued = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local id, fire_ms, job, outcome, err, now, now_score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                                                       ARGV[6], ARGV[7]
local maxlen, fire, by, stale_by, expect = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local run = run_of(runs, fire_ms, job)
if not run or run.state ~= RUN_RUNNING then return 0 end
run_ended(runs, concurrent, queued, schedule, due, events, id, fire_ms, now_score)
if redis.call('EXISTS', schedule) == 0 then return 1 end
local entry = {'event', outcome, 'fire_at', fire, 'job_id', job, 'attempt', run.attempt, 'by', by}
local fields = {'last_result', outcome, 'last_run_at', now}
for i = 13, #ARGV, 2 do redis.call('HINCRBY', stats, ARGV[i], ARGV[i + 1]) end  -- metrics
if outcome == 'succeeded' then
  table.insert(fields, 'last_success_at'); table.insert(fields, now)
  if redis.call('HGET', schedule, 'state') == 'due' then redis.call('ZADD', stale, stale_by, id) end
  record_success(succeeded, fire_ms, expect)
  succeeded_again(schedule, failing, alerts, id, fire, job, now)
else
  table.insert(entry, 'error'); table.insert(entry, err)
  table.insert(fields, 'last_error'); table.insert(fields, err)
  gave_up(schedule, failing, alerts, id, fire, job, err, now)
end
table.insert(entry, 'at'); table.insert(entry, now)
redis.call('HSET', schedule, unpack(fields))
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', unpack(entry))
return 1
"""
)

CONC_FAIL = (
    RUN_RECORD_LUA
    + """
-- An allow_all run failed and will be retried: its fire keeps its record (and its
-- slot), attempt + 1, state retry; the leader enqueues the retry at the back-off time.
-- KEYS[1] - the schedule hash
-- KEYS[2] - its runs hash
-- KEYS[3] - the concurrent zset
-- KEYS[4] - its history stream
-- KEYS[5] - the queued zset
-- ARGV[1] - the schedule id
-- ARGV[2] - the fire, epoch ms
-- ARGV[3] - the job id of the run
-- ARGV[4] - the retry's time, score
-- ARGV[5] - the retry's time, ISO
-- ARGV[6] - error text
-- ARGV[7] - now, ISO
-- ARGV[8] - history maxlen
-- ARGV[9] - the fire, ISO
-- returns (ConcurrentReply) 1 retry scheduled, 0 not this run in flight (nothing written)
local schedule, runs, concurrent, history, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, fire_ms, job, retry_score, retry_at, err = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                                                     ARGV[6]
local now, maxlen, fire = ARGV[7], ARGV[8], ARGV[9]
local run = run_of(runs, fire_ms, job)
if not run or run.state ~= RUN_RUNNING then return 0 end
local attempt = run.attempt + 1
redis.call('HSET', runs, fire_ms, run_record(job, attempt, run.epoch, run.dispatched_at, run.queue,
                                             RUN_RETRY))
redis.call('ZADD', concurrent, retry_score, id .. ':' .. fire_ms)
redis.call('ZREM', queued, id .. ':' .. fire_ms)  -- waiting for its retry is not queued
if redis.call('EXISTS', schedule) == 1 then
  redis.call('HSET', schedule, 'last_result', 'failed', 'last_run_at', now, 'last_error', err)
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'failed', 'fire_at', fire,
             'job_id', job, 'error', err, 'next_attempt', attempt, 'retry_at', retry_at, 'at', now)
end
return 1
"""
)

CONC_REDISPATCH = (
    RUN_RECORD_LUA
    + """
-- The retry of an allow_all run: enqueue its next attempt (hash + RPUSH, as RQ writes
-- them) and mark the record running. Fenced by the lease, compare-and-set on the
-- record (state retry, the attempt read).
-- KEYS[1] - the leader lease
-- KEYS[2] - its runs hash
-- KEYS[3] - the concurrent zset
-- KEYS[4] - its history stream
-- KEYS[5] - RQ's queues set
-- KEYS[6] - rqbeat's queues zset
-- KEYS[7] - the queued zset
-- ARGV[1] - our lease token
-- ARGV[2] - the schedule id
-- ARGV[3] - the fire, epoch ms
-- ARGV[4] - the attempt (the record's)
-- ARGV[5] - the job id
-- ARGV[6] - RQ's job key prefix
-- ARGV[7] - RQ's queue key prefix
-- ARGV[8] - the queue
-- ARGV[9] - the job's ttl, s (0 = none)
-- ARGV[10] - the job's created_at/enqueued_at (RQ's format)
-- ARGV[11] - now, ISO
-- ARGV[12] - now, score
-- ARGV[13] - the leader's epoch
-- ARGV[14] - the first look at the run, score
-- ARGV[15] - history maxlen
-- ARGV[16] - the fire, ISO
-- ARGV[17] - when the run counts as queued too long, score
-- ARGV[18..] - the job hash's field/value pairs (all but the two stamps)
-- returns (RedispatchReply) 1 enqueued, 0 not this retry (nothing written), -1 the lease
-- is not ours (nothing written)
local leader, runs, concurrent, history, queues_set, our_queues = KEYS[1], KEYS[2], KEYS[3],
                                                                   KEYS[4], KEYS[5], KEYS[6]
local queued = KEYS[7]
local token, id, fire_ms, attempt, job, job_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                                                     ARGV[6]
local queue_prefix, queue, ttl, stamp, now, now_score = ARGV[7], ARGV[8], ARGV[9], ARGV[10],
                                                        ARGV[11], ARGV[12]
local epoch, look, maxlen, fire, queued_by = ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17]
if redis.call('GET', leader) ~= token then return -1 end
local run = run_of(runs, fire_ms, '')
if not run or run.state ~= RUN_RETRY or tostring(run.attempt) ~= attempt then return 0 end
local job_key, queue_key = job_prefix .. job, queue_prefix .. queue
redis.call('HSET', job_key, 'created_at', stamp, 'enqueued_at', stamp, unpack(ARGV, 18))
if ttl ~= '0' then redis.call('EXPIRE', job_key, ttl) end
redis.call('SADD', queues_set, queue_key)
redis.call('ZADD', our_queues, now_score, queue)
redis.call('RPUSH', queue_key, job)
redis.call('HSET', runs, fire_ms, run_record(job, attempt, epoch, now, queue, RUN_RUNNING))
redis.call('ZADD', concurrent, look, id .. ':' .. fire_ms)
redis.call('ZADD', queued, queued_by, id .. ':' .. fire_ms)  -- until a worker starts it
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'dispatched', 'fire_at', fire,
           'job_id', job, 'attempt', attempt, 'epoch', epoch, 'at', now)
return 1
"""
)

CONC_NUDGE = (
    RUN_RECORD_LUA
    + """
-- A worker saw an allow_all run fail: the leader looks at it now.
-- KEYS[1] - its runs hash
-- KEYS[2] - the concurrent zset
-- KEYS[3] - the events channel
-- ARGV[1] - the schedule id
-- ARGV[2] - the fire, epoch ms
-- ARGV[3] - the job id that failed
-- ARGV[4] - now, score
-- returns (ConcurrentReply) 1 nudged, 0 not this run in flight
local runs, concurrent, events = KEYS[1], KEYS[2], KEYS[3]
local id, fire_ms, job, now_score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not run_of(runs, fire_ms, job) then return 0 end
redis.call('ZADD', concurrent, 'XX', now_score, id .. ':' .. fire_ms)
redis.call('PUBLISH', events, 'wake')
return 1
"""
)

CONC_DROP = (
    RUN_RECORD_LUA
    + """
-- Forget an allow_all run whose schedule was removed (its job, already enqueued, runs
-- and nobody acks it), or a member of the concurrent zset without a record (removed
-- with its schedule, or lost): the count is rewritten and a waiting fire woken.
-- KEYS[1] - the schedule hash
-- KEYS[2] - its runs hash
-- KEYS[3] - the concurrent zset
-- KEYS[4] - the due zset
-- KEYS[5] - the events channel
-- KEYS[6] - the queued zset
-- ARGV[1] - the schedule id
-- ARGV[2] - the fire, epoch ms
-- ARGV[3] - the job id read ('' = no record was read)
-- ARGV[4] - now, score
-- returns (ConcurrentReply) 1 dropped, 0 the run changed since the read, or its schedule
-- exists (nothing written)
local schedule, runs, concurrent, due, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local queued = KEYS[6]
local id, fire_ms, job, now_score = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local run = run_of(runs, fire_ms, '')
if (run and run.job_id ~= job) or (not run and job ~= '') then return 0 end
if run and redis.call('EXISTS', schedule) == 1 then return 0 end
run_ended(runs, concurrent, queued, schedule, due, events, id, fire_ms, now_score)
return 1
"""
)
