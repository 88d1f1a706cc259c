"""Edits: what people and the API do to schedules."""

from __future__ import annotations

from scheduler.protocol import UPSERT_READ_FIELDS, lua_list

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
-- KEYS[5] - the broken set
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
local due, ids, revision, events, broken = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
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
    redis.call('SREM', broken, id)
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
-- KEYS[8] - the queued zset
-- KEYS[9] - the stale zset
-- KEYS[10] - the broken set
-- KEYS[11] - the failing zset
-- KEYS[12] - the metered set
-- KEYS[13] - its backfill hash
-- KEYS[14] - the backfills zset
-- KEYS[15] - its succeeded zset
-- ARGV[1] - the schedule id
-- returns (RemoveReply) 1 the schedule existed, 0 it did not
local schedule, history, due, running = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ids, revision, events = KEYS[5], KEYS[6], KEYS[7]
local queued, stale, broken, failing, metered = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local backfill, backfills, succeeded = KEYS[13], KEYS[14], KEYS[15]
local id = ARGV[1]
local existed = redis.call('DEL', schedule)
redis.call('ZREM', queued, id)
redis.call('ZREM', stale, id)
redis.call('SREM', broken, id)
redis.call('ZREM', failing, id)
redis.call('SREM', metered, id)
redis.call('DEL', history)
redis.call('DEL', backfill, succeeded)  -- a backfill in flight stops; its ack finds nothing
redis.call('ZREM', backfills, id)
redis.call('ZREM', due, id)
redis.call('ZREM', running, id)
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
-- KEYS[6] - the stale zset (a paused schedule is not expected to succeed)
-- ARGV[1] - the schedule id
-- ARGV[2] - now, ISO
-- ARGV[3] - history maxlen
-- ARGV[4] - the version the caller expects ('' = any): a compare-and-set
-- returns (PauseReply) 1 paused, 0 already paused, -1 no such schedule, -2 not at the
-- expected version (nothing written)
local schedule, due, revision, events, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local stale = KEYS[6]
local id, now, maxlen, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local state = redis.call('HGET', schedule, 'state')
if not state then return -1 end
if expected ~= '' and redis.call('HGET', schedule, 'version') ~= expected then return -2 end
if state == 'paused' then return 0 end
redis.call('ZREM', due, id)
redis.call('ZREM', stale, id)
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
-- Makes the schedule due now; its regular fires carry on after. The fire that runs is
-- the pending one when it is already due (overdue, or waiting for its retry: replacing
-- it would drop it unrecorded, and reset its attempts), else a new fire = now.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- KEYS[5] - its history stream
-- ARGV[1] - the schedule id
-- ARGV[2] - now, ISO
-- ARGV[3] - now, score
-- ARGV[4] - history maxlen
-- ARGV[5] - the version the caller expects ('' = any): a compare-and-set
-- returns (TriggerReply) 'triggered', 'not_found', 'changed' (not at the expected
-- version: nothing written), or the state that prevents it
local schedule, due, revision, events, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, now, now_score, maxlen, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local state = redis.call('HGET', schedule, 'state')
if not state then return 'not_found' end
if expected ~= '' and redis.call('HGET', schedule, 'version') ~= expected then return 'changed' end
if state ~= 'due' then return state end
local pending = redis.call('HGET', schedule, 'fire_at')
local fire = now
-- ISO UTC text of one fixed width: text order is time order
if pending and pending <= now then
  fire = pending
  redis.call('HSET', schedule, 'updated_at', now)
else
  redis.call('HSET', schedule, 'fire_at', now, 'attempt', 1, 'updated_at', now)
end
redis.call('ZADD', due, now_score, id)
redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'triggered', 'fire_at', fire, 'at', now)
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'wake')
return 'triggered'
"""
