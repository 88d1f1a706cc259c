"""Overlap: a newer fire of a ``cancel_other`` schedule replacing its run in flight."""

from __future__ import annotations

from scheduler.lua.common import RUN_FIELDS_LUA, WAKE_IF_EARLIER

CANCEL = (
    WAKE_IF_EARLIER
    + RUN_FIELDS_LUA
    + """
-- A newer fire replaces the run in flight (overlap = cancel_other): the run is recorded
-- 'cancelled' and the schedule is due now for the newer fire, attempt 1; the caller then
-- stops the RQ job. Compare-and-set on the in-flight job id and the version: an ack, a
-- failure, a pause or an edit that came first wins, and nothing is written.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the running zset
-- KEYS[4] - its history stream
-- KEYS[5] - the events channel
-- KEYS[6] - the queued zset
-- ARGV[1] - the schedule id
-- ARGV[2] - the job id of the run
-- ARGV[3] - the version the newer fire was computed from
-- ARGV[4] - the newer fire, ISO
-- ARGV[5] - its due score
-- ARGV[6] - fires dropped (passed during the run, older than the newer fire)
-- ARGV[7] - now, ISO
-- ARGV[8] - history maxlen
-- returns (CancelReply) 1 cancelled, 0 not this schedule's running run or another
-- version (nothing written)
local schedule, due, running, history, events, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                                        KEYS[5], KEYS[6]
local id, job, version, fire, score, dropped = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, maxlen = ARGV[7], ARGV[8]
local current, state, stored = unpack(redis.call('HMGET', schedule, 'job_id', 'state', 'version'))
if current ~= job or state ~= 'running' or stored ~= version then return 0 end
local old = redis.call('HGET', schedule, 'fire_at')
redis.call('HDEL', schedule, unpack(RUN_FIELDS))
-- last_run_at: the newer fire passed before this end, so dispatch runs it as it is
redis.call('HDEL', schedule, 'attempt')
redis.call('HSET', schedule, 'state', 'due', 'fire_at', fire,
           'last_result', 'cancelled', 'last_run_at', now)
redis.call('ZREM', running, id)
redis.call('ZREM', queued, id)
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'cancelled', 'fire_at', old,
           'job_id', job, 'next_fire_at', fire, 'at', now)
if dropped ~= '0' then
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'missed', 'count', dropped,
             'next_fire_at', fire, 'at', now)
end
wake_if_earlier(due, events, score)
redis.call('ZADD', due, score, id)
return 1
"""
)
