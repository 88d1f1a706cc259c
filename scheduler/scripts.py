"""Every state transition of a schedule, as one Lua script.

A schedule is in exactly one of: ``due`` (in the due zset), ``running`` (in the
running zset, a job in flight), ``paused`` or ``broken`` (in neither). A paused
schedule whose last run is still in flight stays in the running zset until that run
is acknowledged. Dispatch reads a batch with :data:`DUE_READ` and writes it, RQ jobs
included, with :data:`DISPATCH` (see :mod:`scheduler.engine.dispatch`).

Conventions: scores are epoch seconds (ms precision); ``fire_at`` is the ISO time
of the pending (or in-flight) fire, and ``''`` means "recompute from the due score"
(set when a definition changed under an in-flight run). Every edit INCRs the
revision key, which dispatch WATCHes, and publishes on the events channel so the
leader re-plans its wait at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.typing import KeyT

C = TypeVar("C")

# Publishes 'wake' when score ARGV is earlier than anything already due, so the leader
# re-plans; otherwise its current wait already covers the new score.
_WAKE_IF_EARLIER = """
local function wake_if_earlier(due, events, score)
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] == nil or tonumber(score) < tonumber(first[2]) then
    redis.call('PUBLISH', events, 'wake')
  end
end
"""

UPSERT_READ = """
-- What an upsert decides from, for many schedules in one round trip.
-- ARGV[1] schedule key prefix, ARGV[2..] ids
-- returns per id: version, definition, state (a key of another type, set by hand,
-- reads as state 'broken': the upsert replaces it)
local out = {}
for i = 2, #ARGV do
  local row = redis.pcall('HMGET', ARGV[1] .. ARGV[i], 'version', 'definition', 'state')
  if row.err then row = {false, false, 'broken'} end
  for j = 1, 3 do out[#out + 1] = row[j] or false end
end
return out
"""

UPSERT = """
-- Create or replace many schedules (5 arguments each); one revision bump and one
-- publish for the whole call.
-- KEYS[1] due, KEYS[2] ids, KEYS[3] revision, KEYS[4] events
-- ARGV[1] schedule key prefix, ARGV[2] now ISO, then per schedule: id, definition
-- JSON, version read before (0 = new), fire_at ISO of the recomputed next fire or ''
-- to keep the pending fire, its due score
-- returns per schedule the new version, or -1 when the version moved since it was
-- read (re-read, retry)
local function upsert(key, id, definition, read, fire, score)
  if redis.call('TYPE', key)['ok'] ~= 'hash' then
    if tonumber(read) ~= 0 then return -1 end
    redis.call('DEL', key)  -- none, or a key of another type set by hand: replaced
  end
  local current = tonumber(redis.call('HGET', key, 'version') or '0')
  if current ~= tonumber(read) then return -1 end
  local version = current + 1
  redis.call('HSET', key, 'definition', definition, 'version', version, 'updated_at', ARGV[2])
  local state = redis.call('HGET', key, 'state')
  if current == 0 or ((state == 'due' or state == 'broken') and fire ~= '') then
    redis.call('HSET', key, 'state', 'due', 'fire_at', fire, 'attempt', 1)
    redis.call('HDEL', key, 'error')
    redis.call('ZADD', KEYS[1], score, id)
    redis.call('SADD', KEYS[2], id)
  end
  -- running: the in-flight run finishes; its ack sees the new version and re-arms from
  -- the new definition. paused: stays paused; resume computes the next fire.
  return version
end
local out, written = {}, false
for i = 3, #ARGV, 5 do
  local version = upsert(ARGV[1] .. ARGV[i], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
                         ARGV[i + 4])
  written = written or version > 0
  out[#out + 1] = version
end
if written then
  redis.call('INCR', KEYS[3])
  redis.call('PUBLISH', KEYS[4], 'edit')
end
return out
"""

REMOVE = """
-- KEYS[1] schedule hash, KEYS[2] history, KEYS[3] due, KEYS[4] running, KEYS[5] ids,
-- KEYS[6] revision, KEYS[7] events; ARGV[1] id
-- returns 1 if the schedule existed. An in-flight run finishes; its ack finds no
-- schedule and does nothing.
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
existed = existed + redis.call('SREM', KEYS[5], ARGV[1])
redis.call('INCR', KEYS[6])
redis.call('PUBLISH', KEYS[7], 'edit')
return existed > 0 and 1 or 0
"""

PAUSE = """
-- KEYS[1] schedule hash, KEYS[2] due, KEYS[3] revision, KEYS[4] events, KEYS[5] history
-- ARGV[1] id, ARGV[2] now ISO, ARGV[3] history maxlen
-- returns 1 paused, 0 already paused, -1 no such schedule
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state == 'paused' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'paused', 'updated_at', ARGV[2])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', 'event', 'paused', 'at', ARGV[2])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[4], 'edit')
return 1
"""

RESUME = """
-- KEYS[1] schedule hash, KEYS[2] due, KEYS[3] revision, KEYS[4] events, KEYS[5] history
-- ARGV[1] id, ARGV[2] fire_at ISO of the next fire from now, ARGV[3] its score,
-- ARGV[4] now ISO, ARGV[5] history maxlen
-- returns 1 resumed, 0 not paused, -1 no such schedule
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state ~= 'paused' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'job_id') == 1 then
  -- its last run is still in flight: the ack re-arms it
  redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'state', 'due', 'fire_at', ARGV[2], 'attempt', 1, 'updated_at', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', 'event', 'resumed', 'at', ARGV[4])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[4], 'edit')
return 1
"""

TRIGGER = """
-- KEYS[1] schedule hash, KEYS[2] due, KEYS[3] revision, KEYS[4] events, KEYS[5] history
-- ARGV[1] id, ARGV[2] now ISO, ARGV[3] now score, ARGV[4] history maxlen
-- Makes the schedule due now with fire = now; its regular fires carry on after.
-- returns 1 triggered, -1 no such schedule, or the state that prevents it (string)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state ~= 'due' then return state end
redis.call('HSET', KEYS[1], 'fire_at', ARGV[2], 'attempt', 1, 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'event', 'triggered', 'at', ARGV[2])
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', KEYS[4], 'wake')
return 1
"""

ACK = (
    _WAKE_IF_EARLIER
    + """
-- The run of job ARGV[2] is over for good (succeeded, or failed and given up):
-- re-arm the schedule at its next fire. Compare-and-set on the in-flight job id, so a
-- late, duplicate or stale ack (run already acked, schedule removed, re-dispatched)
-- does nothing.
-- KEYS[1] schedule hash, KEYS[2] due, KEYS[3] running, KEYS[4] history, KEYS[5] events
-- ARGV[1] id, ARGV[2] job id, ARGV[3] version the next fire was computed from,
-- ARGV[4] next fire ISO, ARGV[5] next due score, ARGV[6] now ISO, ARGV[7] now score,
-- ARGV[8] outcome ('succeeded' | 'gave_up'), ARGV[9] fires dropped by the misfire
-- policy, ARGV[10] history maxlen, ARGV[11] error text (gave_up) or ''
-- KEYS[6] stats hash, ARGV[12..] (field, increment) pairs for it (scheduler.engine.clusterstats)
-- returns 1 re-armed, 2 definition changed (due now, fire recomputed by the leader),
-- 3 paused (left idle), 0 not this schedule's run in flight (no-op)
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[2] then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
local fire = redis.call('HGET', KEYS[1], 'fire_at')
redis.call('HDEL', KEYS[1], 'job_id', 'job_queue', 'epoch', 'dispatched_at')
redis.call('HSET', KEYS[1], 'last_result', ARGV[8], 'last_run_at', ARGV[6], 'attempt', 1)
redis.call('ZREM', KEYS[3], ARGV[1])
for i = 12, #ARGV, 2 do redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1]) end  -- metrics
local entry = {'event', ARGV[8], 'fire_at', fire, 'job_id', ARGV[2], 'at', ARGV[6]}
if ARGV[11] ~= '' then table.insert(entry, 'error'); table.insert(entry, ARGV[11]) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[10], '*', unpack(entry))
if state ~= 'running' then return 3 end
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[3] then
  redis.call('HSET', KEYS[1], 'state', 'due', 'fire_at', '')
  wake_if_earlier(KEYS[2], KEYS[5], ARGV[7])
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
  return 2
end
if tonumber(ARGV[9]) > 0 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[10], '*', 'event', 'missed',
             'count', ARGV[9], 'next_fire_at', ARGV[4], 'at', ARGV[6])
end
redis.call('HSET', KEYS[1], 'state', 'due', 'fire_at', ARGV[4])
wake_if_earlier(KEYS[2], KEYS[5], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
"""
)

RETRY = (
    _WAKE_IF_EARLIER
    + """
-- The run of job ARGV[2] failed and will be retried: the fire stays pending, due again
-- at the back-off score, attempt + 1. Compare-and-set on the in-flight job id.
-- KEYS[1] schedule hash, KEYS[2] due, KEYS[3] running, KEYS[4] history, KEYS[5] events
-- ARGV[1] id, ARGV[2] job id, ARGV[3] retry score, ARGV[4] retry ISO, ARGV[5] now ISO,
-- ARGV[6] error text, ARGV[7] history maxlen, ARGV[8] '1' to pause instead of retrying
-- returns 1 retry scheduled, 3 paused, 0 not this schedule's run in flight (no-op)
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[2] then return 0 end
local state = redis.call('HGET', KEYS[1], 'state')
local fire = redis.call('HGET', KEYS[1], 'fire_at')
redis.call('HDEL', KEYS[1], 'job_id', 'job_queue', 'epoch', 'dispatched_at')
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'last_result', 'failed', 'last_run_at', ARGV[5], 'last_error', ARGV[6])
redis.call('ZREM', KEYS[3], ARGV[1])
local paused = state ~= 'running' or ARGV[8] == '1'
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'event', 'failed', 'fire_at', fire,
           'job_id', ARGV[2], 'error', ARGV[6], 'next_attempt', attempt,
           'retry_at', paused and '' or ARGV[4], 'at', ARGV[5])
if paused then
  redis.call('HSET', KEYS[1], 'state', 'paused')
  return 3
end
redis.call('HSET', KEYS[1], 'state', 'due')
wake_if_earlier(KEYS[2], KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""
)

NUDGE = """
-- A worker saw job ARGV[2] fail: bring the leader's watchdog look forward to now,
-- so the retry is decided at once rather than at the next scheduled look.
-- KEYS[1] schedule hash, KEYS[2] running, KEYS[3] events; ARGV[1] id, ARGV[2] job id,
-- ARGV[3] now score. returns 1 nudged, 0 not this schedule's run in flight
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[1])
redis.call('PUBLISH', KEYS[3], 'wake')
return 1
"""

MARK_BROKEN = """
-- A definition that cannot be decoded or computed: out of both zsets, state 'broken'
-- with its error, visible in `rqbeat ls`. Fixed by upserting a valid definition.
-- KEYS[1] schedule hash, KEYS[2] due, KEYS[3] running, KEYS[4] history
-- ARGV[1] id, ARGV[2] error text, ARGV[3] now ISO, ARGV[4] history maxlen
-- returns 1 marked, 0 the key is not a hash (only taken out of the zsets)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'broken', 'error', ARGV[2], 'updated_at', ARGV[3])
-- a late ack of an old run must not touch a schedule repaired in the meantime
redis.call('HDEL', KEYS[1], 'job_id', 'job_queue', 'epoch', 'dispatched_at')
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', 'broken', 'error', ARGV[2],
           'at', ARGV[3])
return 1
"""


DUE_READ = """
-- One batch of due schedules with the hash fields dispatch decides from, plus the
-- lease and the revision the write is fenced with (one round trip).
-- KEYS[1] due, KEYS[2] leader, KEYS[3] revision
-- ARGV[1] now score, ARGV[2] batch size, ARGV[3] schedule key prefix
-- returns {leader, revision, id, score, definition, version, state, fire_at, attempt, ...}
-- The hashes are named prefix .. id, not passed as KEYS: rqbeat does not run on Cluster.
local out = {redis.call('GET', KEYS[2]) or '', redis.call('GET', KEYS[3]) or '0'}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
  local row = redis.pcall('HMGET', ARGV[3] .. due[i], 'definition', 'version', 'state',
                          'fire_at', 'attempt')
  if row.err then row = {} end  -- not a hash: decided broken, not an error for the batch
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  for j = 1, 5 do out[#out + 1] = row[j] or false end
end
return out
"""

DISPATCH = """
-- Write one decided batch: every run's RQ job (hash + RPUSH, as RQ writes them), the
-- schedule's in-flight state and history, and the reschedules -- or nothing at all.
-- KEYS[1] leader, KEYS[2] revision, KEYS[3] due, KEYS[4] running, KEYS[5] RQ's queues set
-- ARGV[1] lease token, ARGV[2] revision the batch was read at, ARGV[3] schedule key
-- prefix, ARGV[4] history key prefix, ARGV[5] RQ job key prefix, ARGV[6] RQ queue key
-- prefix, ARGV[7] now ISO, ARGV[8] first watchdog look (score), ARGV[9] epoch,
-- ARGV[10] history maxlen, ARGV[11] the jobs' created_at/enqueued_at (RQ's format),
-- ARGV[12] number of runs, ARGV[13] number of reschedules,
-- then per run:        id, fire ISO, attempt, job id, queue, dropped, job ttl s (0 = none),
--                      n, then n job hash field/values (all but the two stamps)
-- then per reschedule: id, fire ISO, due score, dropped
-- returns 1 written, -1 the lease is not ARGV[1] (deposed: nothing written),
-- -2 an edit moved the revision since the read (re-read and decide again)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return -2 end
local sched, hist, now, epoch, maxlen = ARGV[3], ARGV[4], ARGV[7], ARGV[9], ARGV[10]
local queues = {}
local i = 14
for _ = 1, tonumber(ARGV[12]) do
  local id, fire, attempt, job, queue, dropped, ttl, n = unpack(ARGV, i, i + 7)
  local last = i + 7 + tonumber(n)
  local job_key, queue_key = ARGV[5] .. job, ARGV[6] .. queue
  redis.call('HSET', job_key, 'created_at', ARGV[11], 'enqueued_at', ARGV[11],
             unpack(ARGV, i + 8, last))
  if ttl ~= '0' then redis.call('EXPIRE', job_key, ttl) end
  if not queues[queue_key] then
    queues[queue_key] = true
    redis.call('SADD', KEYS[5], queue_key)
  end
  redis.call('RPUSH', queue_key, job)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], ARGV[8], id)
  redis.call('HSET', sched .. id, 'state', 'running', 'fire_at', fire, 'attempt', attempt,
             'job_id', job, 'job_queue', queue, 'epoch', epoch, 'dispatched_at', now)
  if dropped ~= '0' then  -- the fires this run stands for (coalesce) or that were too old
    redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'missed',
               'fire_at', fire, 'count', dropped, 'at', now)
  end
  redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'dispatched',
             'fire_at', fire, 'job_id', job, 'attempt', attempt, 'epoch', epoch, 'at', now)
  i = last + 1
end
for _ = 1, tonumber(ARGV[13]) do
  local id, fire, score, dropped = unpack(ARGV, i, i + 3)
  redis.call('ZADD', KEYS[3], score, id)
  redis.call('HSET', sched .. id, 'fire_at', fire, 'attempt', 1)
  if dropped ~= '0' then
    redis.call('XADD', hist .. id, 'MAXLEN', '~', maxlen, '*', 'event', 'missed',
               'fire_at', fire, 'count', dropped, 'next_fire_at', fire, 'at', now)
  end
  i = i + 4
end
return 1
"""


class Flags(StrEnum):
    """The ``#!lua`` shebang a script is registered with (Redis 7+ script flags).

    A script without a shebang runs in Redis's compatibility mode, where ``maxmemory``
    is only checked at its first write that can grow memory: one that deletes first
    (UPSERT replacing a key) then writes on past the limit. With a shebang Redis
    refuses a writing script as a whole, before it runs, when memory is full: the
    caller gets ``OOM`` and nothing is written."""

    #: writes: refused as a whole when ``used_memory > maxmemory``
    WRITES = "#!lua"
    #: reads only: runs under OOM (and on a read-only replica)
    READS = "#!lua flags=no-writes"
    #: writes a few bytes at most (or frees memory) and must work when memory is full
    ALLOW_OOM = "#!lua flags=allow-oom"


def flagged(body: str, flags: Flags = Flags.WRITES) -> str:
    """``body`` with its flags declared on the first line, as Redis expects them."""
    return f"{flags}\n{body}"


def register(conn: Redis, body: str, flags: Flags = Flags.WRITES) -> Script:
    """Register ``body`` on ``conn`` with its flags (see :class:`Flags`). The SHA is
    that of the flagged text, so raw EVALSHA (:class:`Pending`) finds it as well."""
    return conn.register_script(flagged(body, flags))


class Scripts:
    """The scripts registered on one client (EVALSHA, loaded on first use)."""

    def __init__(self, conn: Redis) -> None:
        self.upsert_read = register(conn, UPSERT_READ, Flags.READS)
        self.upsert = register(conn, UPSERT)
        # Removing frees memory: the way out of a full Redis must not be refused.
        self.remove = register(conn, REMOVE, Flags.ALLOW_OOM)
        self.pause = register(conn, PAUSE)
        self.resume = register(conn, RESUME)
        self.trigger = register(conn, TRIGGER)
        self.ack = register(conn, ACK)
        self.retry = register(conn, RETRY)
        self.nudge = register(conn, NUDGE)
        self.mark_broken = register(conn, MARK_BROKEN)
        self.due_read = register(conn, DUE_READ, Flags.READS)
        self.dispatch = register(conn, DISPATCH)


def run(script: Script, keys: Sequence[KeyT], args: Sequence[Any], client: Any = None) -> Any:
    """Call a script; a typed seam over redis-py's loosely typed ``Script.__call__``."""
    return script(keys=list(keys), args=list(args), client=client)


class Pending:
    """A script call sent but not answered yet, so the caller can work while Redis runs
    it (dispatch decides the next batch meanwhile). :meth:`result` collects the reply;
    :meth:`abandon` drops the call's connection when the caller gives up on it."""

    def __init__(self, conn: Redis, script: Script, keys: Sequence[KeyT], args: Sequence[Any]) -> None:
        self._client, self._script, self._keys, self._args = conn, script, keys, args
        self._pool = conn.connection_pool
        self._conn: Any = self._pool.get_connection()
        try:
            self._conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except BaseException:
            self.abandon()
            raise

    def result(self) -> Any:
        try:
            reply = self._conn.read_response()
        except NoScriptError:  # not run at all (Redis restarted): load it and run it now
            self._pool.release(self._conn)
            return run(self._script, self._keys, self._args, self._client)
        except BaseException:
            self.abandon()
            raise
        self._pool.release(self._conn)
        return reply

    def abandon(self) -> None:
        self._conn.disconnect()
        self._pool.release(self._conn)


def pipelined(
    conn: Redis,
    script: Script,
    keys: Sequence[KeyT],
    batches: Iterable[tuple[C, Sequence[Any] | None]],
    settle: Callable[[C, Any], bool],
) -> None:
    """Call ``script`` once per batch, with the next batch prepared while Redis runs
    the last one: ``batches`` is consumed lazily, so its Python work overlaps Redis's.
    Each batch's reply goes to ``settle(context, reply)`` in order, before the next
    batch is sent; ``settle`` returning False stops there (the rest is never sent).
    A batch whose arguments are None is not sent; its reply is None."""
    in_flight: tuple[C, Pending | None] | None = None
    try:
        for context, args in batches:
            if in_flight is not None:
                done, call = in_flight
                in_flight = None
                if not settle(done, None if call is None else call.result()):
                    return
            in_flight = (context, None if args is None else Pending(conn, script, keys, args))
        if in_flight is not None:
            done, call = in_flight
            in_flight = None
            settle(done, None if call is None else call.result())
    finally:
        if in_flight is not None and in_flight[1] is not None:
            in_flight[1].abandon()
