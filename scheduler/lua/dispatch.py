"""Dispatch: the leader's read of due schedules and its fenced write of a batch."""

from __future__ import annotations

from scheduler.lua.common import COMPLETE_LUA
from scheduler.lua.concurrent import RUN_RECORD_LUA
from scheduler.protocol import CAP_FIELD, DUE_FIELDS, IN_FLIGHT_FIELD, NO_FIRE, CompletedBy, lua_list

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
-- The hashes are named prefix .. id, not passed as KEYS: on a Redis Cluster they share
-- the namespace's slot, and the slot guard (scheduler.slotguard) keeps a migration out.
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

DISPATCH = (
    COMPLETE_LUA
    + RUN_RECORD_LUA
    + f"""
local NO_FIRE, BY_END_AT, IN_FLIGHT = '{NO_FIRE}', '{CompletedBy.END_AT}', '{IN_FLIGHT_FIELD}'
local CAP_FIELD = '{CAP_FIELD}'
"""
    + """
-- Write one decided batch: every run's RQ job (hash + RPUSH, as RQ writes them), the
-- schedule's in-flight state and history, and the reschedules -- or nothing at all.
-- KEYS[1] - the leader lease
-- KEYS[2] - the revision counter
-- KEYS[3] - the due zset
-- KEYS[4] - the running zset
-- KEYS[5] - RQ's queues set
-- KEYS[6] - the queued zset
-- KEYS[7] - the stale zset
-- KEYS[8] - rqbeat's queues zset
-- KEYS[9] - the concurrent zset (allow_all runs)
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
-- ARGV[14] - now, score
-- ARGV[15] - number of spawns (allow_all runs)
-- ARGV[16] - the runs key prefix
-- then ARGV[12] runs, 10 + n each, from ARGV[i] (i = 17 for the first):
-- ARGV[i] - the schedule id
-- ARGV[i + 1] - the fire, ISO
-- ARGV[i + 2] - the attempt
-- ARGV[i + 3] - the job id
-- ARGV[i + 4] - the queue
-- ARGV[i + 5] - fires dropped by the misfire policy
-- ARGV[i + 6] - the job's ttl, s (0 = none)
-- ARGV[i + 7] - when the run counts as queued too long, score
-- ARGV[i + 8] - when the schedule counts as stale if it has no success by then, score
-- ARGV[i + 9] - n
-- ARGV[i + 10 .. i + 9 + n] - the job hash's field/value pairs (all but the two stamps)
-- then ARGV[13] reschedules, 4 each:
-- ARGV[i] - the schedule id
-- ARGV[i + 1] - the fire, ISO, or NO_FIRE (none before end_at: the schedule completes)
-- ARGV[i + 2] - its due score (SLOT_WAIT_SCORE: an allow_all fire waits for a slot)
-- ARGV[i + 3] - fires dropped by the misfire policy
-- then ARGV[15] spawns, 12 + n each: a run of an allow_all schedule beside its others
-- (its own record in the runs hash, watched through the concurrent zset); the
-- schedule stays due, at its next fire
-- ARGV[i] - the schedule id
-- ARGV[i + 1] - the fire, ISO
-- ARGV[i + 2] - the fire, epoch ms
-- ARGV[i + 3] - the job id
-- ARGV[i + 4] - the queue
-- ARGV[i + 5] - fires dropped by the misfire policy
-- ARGV[i + 6] - the job's ttl, s (0 = none)
-- ARGV[i + 7] - when the schedule counts as stale if it has no success by then, score
-- ARGV[i + 8] - the next fire, ISO, or NO_FIRE (none before end_at: the schedule completes)
-- ARGV[i + 9] - its due score
-- ARGV[i + 10] - when the run counts as queued too long, score (member <id>:<fire ms>)
-- ARGV[i + 11] - n
-- ARGV[i + 12 .. i + 11 + n] - the job hash's field/value pairs (all but the two stamps)
-- returns (DispatchReply) 1 written, -1 the lease is not ours (deposed: nothing
-- written), -2 an edit moved the revision since the read (re-read and decide again)
local leader, revision, due, running, queues_set = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local queued, stale, our_queues, concurrent = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local token, read_revision, sched, hist = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local job_prefix, queue_prefix, now, first_look = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local epoch, maxlen, stamp, n_runs, n_reschedules = ARGV[9], ARGV[10], ARGV[11], ARGV[12],
                                                    ARGV[13]
local now_score, n_spawns, runs_prefix = ARGV[14], ARGV[15], ARGV[16]
if redis.call('GET', leader) ~= token then return -1 end
if (redis.call('GET', revision) or '0') ~= read_revision then return -2 end
local queues = {}
local function enqueue(job, queue, ttl, from, to)
  local job_key, queue_key = job_prefix .. job, queue_prefix .. queue
  redis.call('HSET', job_key, 'created_at', stamp, 'enqueued_at', stamp, unpack(ARGV, from, to))
  if ttl ~= '0' then redis.call('EXPIRE', job_key, ttl) end
  if not queues[queue_key] then
    queues[queue_key] = true
    redis.call('SADD', queues_set, queue_key)
    redis.call('ZADD', our_queues, now_score, queue)
  end
  redis.call('RPUSH', queue_key, job)
end
local i = 17
for _ = 1, tonumber(n_runs) do
  local id, fire, attempt, job, queue, dropped, ttl, queued_by, stale_by, n = unpack(ARGV, i, i + 9)
  local last = i + 9 + tonumber(n)
  enqueue(job, queue, ttl, i + 10, last)
  redis.call('ZREM', due, id)
  redis.call('ZADD', running, first_look, id)
  redis.call('HSET', sched .. id, 'state', 'running', 'fire_at', fire, 'attempt', attempt,
             'job_id', job, 'job_queue', queue, 'epoch', epoch, 'dispatched_at', now)  -- RUN_FIELDS
  redis.call('ZADD', queued, queued_by, id)  -- until START
  redis.call('ZADD', stale, 'NX', stale_by, id)  -- a first run: stale from now if it never succeeds
  if dropped ~= '0' then  -- the fires this run stands for (coalesce) or that were too old
    redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'missed',
               'fire_at', fire, 'count', dropped, 'at', now)
  end
  redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'dispatched',
             'fire_at', fire, 'job_id', job, 'attempt', attempt, 'epoch', epoch, 'at', now)
  i = last + 1
end
-- An allow_all schedule waits for a slot only while its runs fill its cap: a run that
-- ended between the read and this write (its ack found no waiting fire to wake) leaves
-- it due now instead, so no fire waits behind a slot that is free.
local function has_slot(id)
  local cap = tonumber(redis.call('HGET', sched .. id, CAP_FIELD) or '')
  return cap ~= nil and redis.call('HLEN', runs_prefix .. id) < cap
end
for _ = 1, tonumber(n_reschedules) do
  local id, fire, score, dropped = unpack(ARGV, i, i + 3)
  if tonumber(score) >= SLOT_WAIT_SCORE and has_slot(id) then score = now_score end
  if dropped ~= '0' then
    local entry = {'event', 'missed', 'count', dropped, 'at', now}
    if fire ~= NO_FIRE then
      for _, v in ipairs({'fire_at', fire, 'next_fire_at', fire}) do table.insert(entry, v) end
    end
    redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', unpack(entry))
  end
  if fire == NO_FIRE then
    complete(sched .. id, due, stale, hist .. id, id, maxlen, now, BY_END_AT)
  else
    redis.call('ZADD', due, score, id)
    redis.call('HSET', sched .. id, 'fire_at', fire)
    redis.call('HDEL', sched .. id, 'attempt')
  end
  i = i + 4
end
for _ = 1, tonumber(n_spawns) do
  local id, fire, fire_ms, job, queue, dropped, ttl, stale_by, next_fire, next_score, queued_by, n =
    unpack(ARGV, i, i + 11)
  local last = i + 11 + tonumber(n)
  if not has_slot(id) then  -- never above the cap, whatever the read said: wait instead
    redis.call('HSET', sched .. id, 'fire_at', fire)
    redis.call('HDEL', sched .. id, 'attempt')
    redis.call('ZADD', due, SLOT_WAIT_SCORE, id)
  else
    enqueue(job, queue, ttl, i + 12, last)
    local runs = runs_prefix .. id
    redis.call('HSET', runs, fire_ms, run_record(job, 1, epoch, now, queue, RUN_RUNNING))
    local in_flight = redis.call('HLEN', runs)
    redis.call('ZADD', concurrent, first_look, id .. ':' .. fire_ms)
    redis.call('ZADD', queued, queued_by, id .. ':' .. fire_ms)  -- until a worker starts it
    redis.call('ZADD', stale, 'NX', stale_by, id)
    if dropped ~= '0' then
      redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'missed',
                 'fire_at', fire, 'count', dropped, 'at', now)
    end
    redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'dispatched',
               'fire_at', fire, 'job_id', job, 'attempt', 1, 'epoch', epoch,
               'in_flight', in_flight, 'at', now)
    redis.call('HSET', sched .. id, IN_FLIGHT, in_flight)
    if next_fire == NO_FIRE then
      complete(sched .. id, due, stale, hist .. id, id, maxlen, now, BY_END_AT)
    else
      redis.call('ZADD', due, next_score, id)
      redis.call('HSET', sched .. id, 'fire_at', next_fire)
      redis.call('HDEL', sched .. id, 'attempt')  -- 1 is the default: not stored
    end
  end
  i = last + 1
end
return 1
"""
)
