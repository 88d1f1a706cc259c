"""Reads for the dashboard's list: keyset paging over the due and running zsets."""

from __future__ import annotations

RANGE_AFTER = """
-- The members of a zset that come after a position, in the zset's own order (score,
-- then member bytewise), with their scores: keyset paging. A position is the (score,
-- member) of the last row already seen; members that move elsewhere in the zset, or
-- leave it, cannot shift it (an offset would: a member inserted before it repeats a
-- row, one removed before it skips a row). The member need not be in the zset any more.
-- KEYS[1] - the zset
-- ARGV[1] - the position's score, as Redis wrote it ('' = from the start)
-- ARGV[2] - the position's member
-- ARGV[3] - how many members at most
-- returns member, score, member, score, ... (as ZRANGE WITHSCORES)
local zset, score, member, count = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
-- bytewise, as Redis orders members of one score (Lua's < on strings uses the locale)
local function after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local start = 0
if score ~= '' then
  -- the members of exactly that score are ranks [lo, hi): find the first after member
  local lo = redis.call('ZCOUNT', zset, '-inf', '(' .. score)
  local hi = redis.call('ZCOUNT', zset, '-inf', score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if after(redis.call('ZRANGE', zset, mid, mid)[1], member) then hi = mid else lo = mid + 1 end
  end
  start = lo
end
return redis.call('ZRANGE', zset, start, start + count - 1, 'WITHSCORES')
"""
