"""Lua snippets the scripts share."""

from __future__ import annotations

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
