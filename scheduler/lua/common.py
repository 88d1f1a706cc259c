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


#: ``iso_now()``: Redis ``TIME`` as :func:`scheduler.clock.iso` writes it
#: (``2027-03-28T01:00:00.000Z``), for a script that records a moment without a round
#: trip for the time first. Days to a civil date: H. Hinnant's ``civil_from_days``.
ISO_NOW_LUA = """
local function iso_ms(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local secs = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
                       math.floor(secs / 3600), math.floor(secs % 3600 / 60), secs % 60, ms % 1000)
end
local function iso_now()
  local t = redis.call('TIME')
  return iso_ms(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
"""
