"""Edits: what people and the API do to schedules."""

from __future__ import annotations

from scheduler.lua.common import AUDIT
from scheduler.protocol import (
    NO_FIRE,
    PAUSE_FIELDS,
    TRIGGERED_FIELD,
    UPSERT_READ_ABSENT,
    UPSERT_READ_FIELDS,
    CompletedBy,
    lua_list,
)

UPSERT_READ = (
    lua_list("FIELDS", UPSERT_READ_FIELDS)
    + f"""
local ABSENT = {UPSERT_READ_ABSENT}
"""
    + """
-- What an upsert decides from, for many schedules in one round trip.
-- ARGV[1] - the schedule key prefix
-- ARGV[2..] - the schedule ids
-- returns per id: ABSENT when there is no such key, else #FIELDS and then version,
-- definition, state, settings (UPSERT_READ_FIELDS; a key of another type, set by hand,
-- reads as state 'broken': the upsert replaces it)
local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local key = prefix .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    out[#out + 1] = ABSENT
  else
    local row = redis.pcall('HMGET', key, unpack(FIELDS))
    if row.err then row = {false, false, 'broken'} end
    out[#out + 1] = #FIELDS
    for j = 1, #FIELDS do out[#out + 1] = row[j] or false end
  end
end
return out
"""
)

UPSERT = (
    AUDIT
    + f"""
local NO_FIRE = '{NO_FIRE}'
"""
    + """
-- Create or replace many schedules; one revision bump and one publish for the whole
-- call. Each write is audited: 'updated' in the schedule's history and the edit log,
-- 'created' in the edit log only (scheduler.audit: a stream per new schedule costs
-- ~4.7 KB).
-- KEYS[1] - the due zset
-- KEYS[2] - the ids set
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- KEYS[5] - the broken set
-- KEYS[6] - the edit log stream
-- KEYS[7] - the stale zset (a completed schedule is expected to do nothing more)
-- ARGV[1] - the schedule key prefix
-- ARGV[2] - now, ISO
-- ARGV[3] - the history key prefix
-- ARGV[4] - history maxlen
-- ARGV[5] - by: who makes the edit
-- ARGV[6] - note ('' = none)
-- ARGV[7] - L, the number of layouts: the lists of definition fields the schedules set
--   (scheduler.stored.Layouts), each sent once per call instead of once per schedule
-- then L times: the number of fields, then their names
-- then per schedule, from ARGV[i]:
-- ARGV[i] - the schedule id
-- ARGV[i + 1] - the version read before (0 = new)
-- ARGV[i + 2] - fire_at ISO of the recomputed next fire, '' to keep the pending fire, or
--   NO_FIRE: none is left (past end_at, max_runs reached): completed, unless a run is
--   in flight or it is paused (then its ack or resume completes it)
-- ARGV[i + 3] - its due score
-- ARGV[i + 4] - the changed fields, for the audit entry ('' for a new schedule)
-- ARGV[i + 5] - the number of its layout (1-based): the s definition fields it sets
-- ARGV[i + 6] - d, the number of definition fields to delete
-- ARGV[i + 7 ..] - the s values, in the layout's order, then d field names
-- returns per schedule the new version, or -1 (UpsertReply.CONFLICT) when the version
-- moved since it was read (re-read, retry)
local due, ids, revision, events, broken, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local stale = KEYS[7]
local prefix, now, history_prefix, maxlen, by, note = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local layout_count = ARGV[7]
local function arm(key, id, fire, score)
  if fire == NO_FIRE then
    redis.call('HSET', key, 'state', 'completed', 'fire_at', '')
    redis.call('ZREM', due, id)
    redis.call('ZREM', stale, id)
  else
    redis.call('HSET', key, 'state', 'due', 'fire_at', fire)
    redis.call('ZADD', due, score, id)
  end
end
-- head (the state fields to write) followed by the layout's fields and their values
local function fields(head, names, first)
  local n = #head
  for j = 1, #names do
    head[n + 2 * j - 1] = names[j]
    head[n + 2 * j] = ARGV[first + j - 1]
  end
  return head
end
local function create(key, id, fire, score, changed, names, first)
  -- the common case of a big apply, in half the calls: no hash to compare or clean up,
  -- the definition and the state in one HSET (no updated_at: the creation is in the
  -- edit log; no attempt: a pending fire's first attempt is the default)
  local state, fire_at = 'due', fire
  if fire == NO_FIRE then state, fire_at = 'completed', '' end
  redis.call('HSET', key, unpack(fields({'version', 1, 'state', state, 'fire_at', fire_at}, names, first)))
  redis.call('SREM', broken, id)
  redis.call('SADD', ids, id)
  if fire == NO_FIRE then
    redis.call('ZREM', due, id)
    redis.call('ZREM', stale, id)
  else
    redis.call('ZADD', due, score, id)
  end
  audit(false, log, maxlen, id, audit_entry('created', now, by, note, 1, changed))
  return 1
end
local function upsert(key, id, read, fire, score, changed, names, first, dels)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' and tonumber(read) == 0 then
    return create(key, id, fire, score, changed, names, first)
  end
  if kind ~= 'hash' then
    if tonumber(read) ~= 0 then return -1 end
    redis.call('DEL', key)  -- none, or a key of another type set by hand: replaced
  end
  local current = tonumber(redis.call('HGET', key, 'version') or '0')
  if current ~= tonumber(read) then return -1 end
  local version = current + 1
  -- updated_at is the time of the last edit: a new schedule has none yet (its creation
  -- is in the edit log), one field fewer in each of 100k apply-made hashes
  if current == 0 then
    redis.call('HSET', key, unpack(fields({'version', version}, names, first)))
  else
    redis.call('HSET', key, unpack(fields({'version', version, 'updated_at', now}, names, first)))
  end
  if dels > 0 then
    redis.call('HDEL', key, unpack(ARGV, first + #names, first + #names + dels - 1))
    -- Redis never turns a hashtable back into a listpack: write it anew, so a hash of
    -- the previous form (one long JSON field) gets the compact encoding back
    if redis.call('OBJECT', 'ENCODING', key) == 'hashtable' then
      local all = redis.call('HGETALL', key)
      redis.call('DEL', key)
      redis.call('HSET', key, unpack(all))
    end
  end
  local state = redis.call('HGET', key, 'state')
  local idle = state == 'due' or state == 'broken' or state == 'completed'
  if current == 0 or (idle and fire ~= '') then
    redis.call('HDEL', key, 'error', 'attempt')
    redis.call('SREM', broken, id)
    redis.call('SADD', ids, id)
    arm(key, id, fire, score)
  end
  -- running: the in-flight run finishes; its ack sees the new version and re-arms from
  -- the new definition. paused: stays paused; resume computes the next fire.
  local event, history = 'updated', history_prefix .. id
  if current == 0 then event, history = 'created', false end
  audit(history, log, maxlen, id, audit_entry(event, now, by, note, version, changed))
  return version
end
local layouts = {}
local i = 8
for l = 1, tonumber(layout_count) do
  local size = tonumber(ARGV[i])
  layouts[l] = {unpack(ARGV, i + 1, i + size)}
  i = i + 1 + size
end
local out, written = {}, false
while i <= #ARGV do
  local names, dels = layouts[tonumber(ARGV[i + 5])], tonumber(ARGV[i + 6])
  local version = upsert(prefix .. ARGV[i], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
                         ARGV[i + 4], names, i + 7, dels)
  written = written or version > 0
  out[#out + 1] = version
  i = i + 7 + #names + dels
end
if written then
  redis.call('INCR', revision)
  redis.call('PUBLISH', events, 'edit')
end
return out
"""
)

REMOVE = (
    AUDIT
    + """
-- Delete a schedule and its history; the edit log records the removal. An in-flight
-- run finishes; its ack finds no schedule and does nothing.
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
-- KEYS[13] - the paused-until zset
-- KEYS[14] - the edit log stream
-- KEYS[15] - its backfill hash
-- KEYS[16] - the backfills zset
-- KEYS[17] - its succeeded zset
-- KEYS[18] - its allow_all runs hash
-- ARGV[1] - the schedule id
-- ARGV[2] - now, ISO
-- ARGV[3] - by: who removes it
-- ARGV[4] - note ('' = none)
-- returns (RemoveReply) 1 the schedule existed, 0 it did not
local schedule, history, due, running = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ids, revision, events = KEYS[5], KEYS[6], KEYS[7]
local queued, stale, broken, failing, metered = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local paused_until, log = KEYS[13], KEYS[14]
local backfill, backfills, succeeded, runs = KEYS[15], KEYS[16], KEYS[17], KEYS[18]
local id, now, by, note = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local version = redis.pcall('HGET', schedule, 'version')
if type(version) ~= 'string' then version = '' end  -- none, or a key of another type
local existed = redis.call('DEL', schedule)
redis.call('ZREM', queued, id)
redis.call('ZREM', stale, id)
redis.call('SREM', broken, id)
redis.call('ZREM', failing, id)
redis.call('SREM', metered, id)
redis.call('ZREM', paused_until, id)
redis.call('DEL', history)
redis.call('DEL', backfill, succeeded)  -- a backfill in flight stops; its ack finds nothing
-- allow_all runs in flight finish unacked; the leader drops their members of the
-- concurrent zset (no record), so a schedule re-created with this id starts at 0
redis.call('DEL', runs)
redis.call('ZREM', backfills, id)
redis.call('ZREM', due, id)
redis.call('ZREM', running, id)
existed = existed + redis.call('SREM', ids, id)
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'edit')
if existed > 0 then
  audit(false, log, 0, id, audit_entry('removed', now, by, note, version, ''))
  return 1
end
return 0
"""
)

PAUSE = (
    lua_list("PAUSE_FIELDS", PAUSE_FIELDS)
    + AUDIT
    + """
-- Stop firing; a run in flight finishes (its ack leaves the schedule paused). With an
-- until, the leader resumes it then (the paused-until zset). Pausing a paused schedule
-- with a note or an until replaces its note and until.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- KEYS[5] - its history stream
-- KEYS[6] - the stale zset (a paused schedule is not expected to succeed)
-- KEYS[7] - the paused-until zset
-- KEYS[8] - the edit log stream
-- ARGV[1] - the schedule id
-- ARGV[2] - now, ISO
-- ARGV[3] - history maxlen
-- ARGV[4] - until, ISO ('' = until resumed)
-- ARGV[5] - until, score
-- ARGV[6] - by: who pauses it
-- ARGV[7] - note ('' = none)
-- ARGV[8] - the version the caller expects ('' = any): a compare-and-set
-- returns (PauseReply) 1 paused, 2 already paused (note and until replaced), 0 already
-- paused, -1 no such schedule, -2 not at the expected version (nothing written)
local schedule, due, revision, events, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local stale, paused_until, log = KEYS[6], KEYS[7], KEYS[8]
local id, now, maxlen, until_iso, until_score, by, note = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                                                      ARGV[6], ARGV[7]
local expected = ARGV[8]
local state = redis.call('HGET', schedule, 'state')
if not state then return -1 end
if expected ~= '' and redis.call('HGET', schedule, 'version') ~= expected then return -2 end
local updating = state == 'paused'
if updating and until_iso == '' and note == '' then return 0 end
redis.call('ZREM', due, id)
redis.call('ZREM', stale, id)
redis.call('HDEL', schedule, unpack(PAUSE_FIELDS))
redis.call('HSET', schedule, 'state', 'paused', 'updated_at', now, 'paused_by', by)
if note ~= '' then redis.call('HSET', schedule, 'pause_note', note) end
local fields = audit_entry('paused', now, by, note, redis.call('HGET', schedule, 'version') or '', '')
if until_iso ~= '' then
  redis.call('HSET', schedule, 'paused_until', until_iso)
  redis.call('ZADD', paused_until, until_score, id)
  fields[#fields + 1] = 'until'
  fields[#fields + 1] = until_iso
else
  redis.call('ZREM', paused_until, id)
end
audit(history, log, maxlen, id, fields)
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'edit')
if updating then return 2 end
return 1
"""
)

RESUME = (
    lua_list("PAUSE_FIELDS", PAUSE_FIELDS)
    + AUDIT
    + f"""
local NO_FIRE, BY_END_AT = '{NO_FIRE}', '{CompletedBy.END_AT}'
"""
    + """
-- Fire again from now on: fires that passed while paused never run; each is recorded
-- as skipped. Compare-and-set on what the caller read, so the skipped fires it counted
-- are the ones that passed. The leader's resume at a pause's until is fenced (its
-- lease token) and checks that the until it read is still the pause's.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- KEYS[5] - its history stream
-- KEYS[6] - the paused-until zset
-- KEYS[7] - the edit log stream
-- KEYS[8] - the lease key (read only when a token is given)
-- ARGV[1] - the schedule id
-- ARGV[2] - fire_at ISO of the next fire from now, or NO_FIRE (past end_at: completed)
-- ARGV[3] - its due score
-- ARGV[4] - now, ISO
-- ARGV[5] - history maxlen
-- ARGV[6] - the version as read
-- ARGV[7] - fire_at as read ('' = missing)
-- ARGV[8] - job_id as read ('' = no run in flight)
-- ARGV[9] - fires skipped (pending or passed while paused: never run)
-- ARGV[10] - the first of them, ISO
-- ARGV[11] - by: who resumes it
-- ARGV[12] - note ('' = none)
-- ARGV[13] - the leader's lease token ('' = not fenced: a person's resume)
-- ARGV[14] - the pause's until as read ('' = not checked)
-- returns (ResumeReply) 1 resumed, 0 not paused, -1 no such schedule, -2 changed since
-- it was read (an ack, a failure or an edit: the skipped fires differ; re-read), -3 the
-- lease is not the token's, -4 the pause's until is no longer the one read
local schedule, due, revision, events, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local paused_until, log, leader = KEYS[6], KEYS[7], KEYS[8]
local id, fire, score, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local read_version, read_fire, read_job = ARGV[6], ARGV[7], ARGV[8]
local skipped, first_skipped = ARGV[9], ARGV[10]
local by, note, token, read_until = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
if token ~= '' and redis.call('GET', leader) ~= token then return -3 end
local state = redis.call('HGET', schedule, 'state')
if not state then
  redis.call('ZREM', paused_until, id)
  return -1
end
if state ~= 'paused' then
  redis.call('ZREM', paused_until, id)
  return 0
end
local function was(name, value) return (redis.call('HGET', schedule, name) or '') == value end
if read_until ~= '' and not was('paused_until', read_until) then
  -- paused again meanwhile (its new until is in the zset), or for good: then the entry is stale
  if was('paused_until', '') then redis.call('ZREM', paused_until, id) end
  return -4
end
if not (was('version', read_version) and was('fire_at', read_fire) and was('job_id', read_job)) then
  return -2
end
if read_job ~= '' then
  -- its last run is still in flight: the ack re-arms it from the first fire after now
  redis.call('HSET', schedule, 'state', 'running', 'resumed_at', now, 'updated_at', now)
elseif fire == NO_FIRE then
  redis.call('HSET', schedule, 'state', 'completed', 'fire_at', '', 'updated_at', now)
  redis.call('HDEL', schedule, 'attempt')
else
  redis.call('HSET', schedule, 'state', 'due', 'fire_at', fire, 'updated_at', now)
  redis.call('HDEL', schedule, 'attempt')
  redis.call('ZADD', due, score, id)
end
redis.call('HDEL', schedule, unpack(PAUSE_FIELDS))
redis.call('ZREM', paused_until, id)
if tonumber(skipped) > 0 then
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'skipped', 'count', skipped,
             'fire_at', first_skipped, 'at', now)
end
audit(history, log, maxlen, id, audit_entry('resumed', now, by, note, read_version, ''))
if read_job == '' and fire == NO_FIRE then
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'completed', 'reason', BY_END_AT,
             'at', now)
end
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'edit')
return 1
"""
)

TRIGGER = (
    AUDIT
    + f"""
local TRIGGERED_FIELD = '{TRIGGERED_FIELD}'
"""
    + """
-- Makes the schedule due now; its regular fires carry on after. The fire that runs is
-- the pending one when it is already due (overdue, or waiting for its retry: replacing
-- it would drop it unrecorded, and reset its attempts), else a new fire = now. The fire
-- is marked asked for (TRIGGERED_FIELD): dispatch runs it as it is, however long it
-- waits (an allow_all schedule at its cap waits for a slot), never drops it.
-- KEYS[1] - the schedule hash
-- KEYS[2] - the due zset
-- KEYS[3] - the revision counter
-- KEYS[4] - the events channel
-- KEYS[5] - its history stream
-- KEYS[6] - the edit log stream
-- ARGV[1] - the schedule id
-- ARGV[2] - now, ISO
-- ARGV[3] - now, score
-- ARGV[4] - history maxlen
-- ARGV[5] - by: who triggers it
-- ARGV[6] - note ('' = none)
-- ARGV[7] - the version the caller expects ('' = any): a compare-and-set
-- returns (TriggerReply) 'triggered', 'not_found', 'changed' (not at the expected
-- version: nothing written), or the state that prevents it
local schedule, due, revision, events, history, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, now, now_score, maxlen, by, note = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local expected = ARGV[7]
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
  redis.call('HSET', schedule, 'fire_at', now, 'updated_at', now)
  redis.call('HDEL', schedule, 'attempt')
end
redis.call('HSET', schedule, TRIGGERED_FIELD, fire)
redis.call('ZADD', due, now_score, id)
local fields = audit_entry('triggered', now, by, note, redis.call('HGET', schedule, 'version') or '', '')
fields[#fields + 1] = 'fire_at'
fields[#fields + 1] = fire
audit(history, log, maxlen, id, fields)
redis.call('INCR', revision)
redis.call('PUBLISH', events, 'wake')
return 'triggered'
"""
)

RECORD_EDIT = (
    AUDIT
    + """
-- Audit an edit another script made (a backfill started, say) when it cannot write
-- the entry itself: the schedule's history and the edit log, as the edit scripts do.
-- KEYS[1] - the schedule hash
-- KEYS[2] - its history stream
-- KEYS[3] - the edit log stream
-- ARGV[1] - the schedule id
-- ARGV[2] - the event (EditEvent, or the caller's own word)
-- ARGV[3] - now, ISO
-- ARGV[4] - history maxlen
-- ARGV[5] - by
-- ARGV[6] - note ('' = none)
-- ARGV[7] - what changed ('' = nothing to say)
-- returns (RecordReply) 1 recorded, 0 no such schedule (nothing written)
local schedule, history, log = KEYS[1], KEYS[2], KEYS[3]
local id, event, now, maxlen, by, note, changed = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                                                  ARGV[6], ARGV[7]
local version = redis.call('HGET', schedule, 'version')
if not version then return 0 end
audit(history, log, maxlen, id, audit_entry(event, now, by, note, version, changed))
return 1
"""
)
