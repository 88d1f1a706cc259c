"""Lua snippets the scripts share."""

from __future__ import annotations

from scheduler.audit import LOG_MAXLEN
from scheduler.protocol import RUN_FIELDS, lua_list

#: The fields of a run in flight, cleared together when the run ends.
RUN_FIELDS_LUA = lua_list("RUN_FIELDS", RUN_FIELDS)

#: Publishes 'wake' when score ARGV is earlier than anything already due, so the leader
#: re-plans; otherwise its current wait already covers the new score.
WAKE_IF_EARLIER = """
local function wake_if_earlier(due, events, score)
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] == nil or tonumber(score) < tonumber(first[2]) then
    redis.call('PUBLISH', events, 'wake')
  end
end
"""

#: A schedule with no fire left (past end_at, or max_runs reached) becomes
#: 'completed': out of the due set (and the stale set: nothing more is expected of
#: it), its pending fire cleared, the reason (CompletedBy) in its history. An edit
#: that reopens the window re-arms it (UPSERT).
COMPLETE_LUA = """
local function complete(schedule, due, stale, history, id, maxlen, now, reason)
  redis.call('HSET', schedule, 'state', 'completed', 'fire_at', '')
  redis.call('HDEL', schedule, 'attempt')
  redis.call('ZREM', due, id)
  redis.call('ZREM', stale, id)
  redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'event', 'completed', 'reason', reason,
             'at', now)
end
"""

#: The audit entry of an edit (scheduler.audit): ``audit_entry`` builds its fields,
#: ``audit`` writes them to the schedule's history (``history`` false: skipped) and,
#: with the schedule's id, to the namespace's edit log. One XADD each, in the script
#: that makes the edit: the record and the change are one atomic step.
AUDIT = f"""
local LOG_MAXLEN = {LOG_MAXLEN}
local function audit_entry(event, now, by, note, version, changed)
  local fields = {{'event', event, 'at', now, 'by', by, 'version', version}}
  if changed ~= '' then fields[#fields + 1] = 'changed'; fields[#fields + 1] = changed end
  if note ~= '' then fields[#fields + 1] = 'note'; fields[#fields + 1] = note end
  return fields
end
local function audit(history, log, history_maxlen, id, fields)
  if history then
    redis.call('XADD', history, 'MAXLEN', '~', history_maxlen, '*', unpack(fields))
  end
  redis.call('XADD', log, 'MAXLEN', '~', LOG_MAXLEN, '*', 'id', id, unpack(fields))
end
"""
