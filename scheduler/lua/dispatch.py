"""Dispatch: the leader's read of due schedules and its fenced write of a batch."""

from __future__ import annotations

from scheduler.lua.common import COMPLETE_LUA
from scheduler.protocol import DUE_FIELDS, NO_FIRE, CompletedBy, lua_list

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
    + f"""
local NO_FIRE, BY_END_AT = '{NO_FIRE}', '{CompletedBy.END_AT}'
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
-- then ARGV[12] runs, 10 + n each, from ARGV[i] (i = 15 for the first):
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
-- ARGV[i + 2] - its due score
-- ARGV[i + 3] - fires dropped by the misfire policy
-- returns (DispatchReply) 1 written, -1 the lease is not ours (deposed: nothing
-- written), -2 an edit moved the revision since the read (re-read and decide again)
local leader, revision, due, running, queues_set = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local queued, stale, our_queues = KEYS[6], KEYS[7], KEYS[8]
local token, read_revision, sched, hist = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local job_prefix, queue_prefix, now, first_look = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local epoch, maxlen, stamp, n_runs, n_reschedules = ARGV[9], ARGV[10], ARGV[11], ARGV[12],
                                                    ARGV[13]
local now_score = ARGV[14]
if redis.call('GET', leader) ~= token then return -1 end
if (redis.call('GET', revision) or '0') ~= read_revision then return -2 end
local queues = {}
local i = 15
for _ = 1, tonumber(n_runs) do
  local id, fire, attempt, job, queue, dropped, ttl, queued_by, stale_by, n = unpack(ARGV, i, i + 9)
  local last = i + 9 + tonumber(n)
  local job_key, queue_key = job_prefix .. job, queue_prefix .. queue
  redis.call('HSET', job_key, 'created_at', stamp, 'enqueued_at', stamp,
             unpack(ARGV, i + 10, last))
  if ttl ~= '0' then redis.call('EXPIRE', job_key, ttl) end
  if not queues[queue_key] then
    queues[queue_key] = true
    redis.call('SADD', queues_set, queue_key)
    redis.call('ZADD', our_queues, now_score, queue)
  end
  redis.call('RPUSH', queue_key, job)
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
for _ = 1, tonumber(n_reschedules) do
  local id, fire, score, dropped = unpack(ARGV, i, i + 3)
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
return 1
"""
)
