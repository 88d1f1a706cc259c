"""Registering and calling the Lua scripts of :mod:`scheduler.lua`.

:class:`Scripts` registers every transition on one client with its flags (a writing
script is refused whole when Redis is full); :func:`run` calls one; :class:`Pending`
and :func:`pipelined` overlap Python work with Redis running a script. The bodies are
re-exported here (``scripts.ACK``) for the code and tests that name them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import hiredis  # a dependency: redis[hiredis]
import redis.connection
from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.typing import KeyT

from scheduler.lua.backfills import (
    BACKFILL_ACK,
    BACKFILL_CANCEL,
    BACKFILL_DISPATCH,
    BACKFILL_FAIL,
    BACKFILL_NUDGE,
    BACKFILL_START,
)
from scheduler.lua.concurrent import CONC_ACK, CONC_DROP, CONC_FAIL, CONC_NUDGE, CONC_REDISPATCH
from scheduler.lua.dispatch import DISPATCH, DUE_READ
from scheduler.lua.edits import PAUSE, RECORD_EDIT, REMOVE, RESUME, TRIGGER, UPSERT, UPSERT_READ
from scheduler.lua.overlap import CANCEL
from scheduler.lua.runs import ACK, ALERT_RECORD, MARK_BROKEN, NUDGE, RETRY, RUN_TIMES_HEADER, START

__all__ = [
    "Flags", "Scripts", "Pending", "flagged", "register", "run", "pipelined",
    "UPSERT_READ", "UPSERT", "REMOVE", "PAUSE", "RESUME", "TRIGGER", "RECORD_EDIT",
    "ACK", "RETRY", "NUDGE", "START", "MARK_BROKEN", "DUE_READ", "DISPATCH", "ALERT_RECORD",
    "CANCEL",
    "RUN_TIMES_HEADER",
    "BACKFILL_START", "BACKFILL_DISPATCH", "BACKFILL_ACK", "BACKFILL_FAIL", "BACKFILL_NUDGE",
    "BACKFILL_CANCEL",
    "CONC_ACK", "CONC_FAIL", "CONC_REDISPATCH", "CONC_NUDGE", "CONC_DROP",
]  # fmt: skip

C = TypeVar("C")


#: redis-py's packer when hiredis is installed (None: an older redis-py without it).
_HIREDIS_PACKER: type | None = getattr(redis.connection, "HiredisRespSerializer", None)


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
        self.record_edit = register(conn, RECORD_EDIT)
        self.ack = register(conn, ACK)
        self.retry = register(conn, RETRY)
        self.nudge = register(conn, NUDGE)
        # Two short fields when a job starts: a full Redis must not fail the job's start.
        self.start = register(conn, START, Flags.ALLOW_OOM)
        self.mark_broken = register(conn, MARK_BROKEN)
        self.alert_record = register(conn, ALERT_RECORD)
        self.due_read = register(conn, DUE_READ, Flags.READS)
        self.dispatch = register(conn, DISPATCH)
        self.cancel = register(conn, CANCEL)
        self.backfill_start = register(conn, BACKFILL_START)
        self.backfill_dispatch = register(conn, BACKFILL_DISPATCH)
        self.backfill_ack = register(conn, BACKFILL_ACK)
        self.backfill_fail = register(conn, BACKFILL_FAIL)
        # a zset score and a wake-up: a full Redis must not hide a failed backfill run
        self.backfill_nudge = register(conn, BACKFILL_NUDGE, Flags.ALLOW_OOM)
        # stopping frees work: the way out of a full Redis must not be refused
        self.backfill_cancel = register(conn, BACKFILL_CANCEL, Flags.ALLOW_OOM)
        self.conc_ack = register(conn, CONC_ACK)
        self.conc_fail = register(conn, CONC_FAIL)
        self.conc_redispatch = register(conn, CONC_REDISPATCH)
        # a zset score and a wake-up: a full Redis must not hide a failed run
        self.conc_nudge = register(conn, CONC_NUDGE, Flags.ALLOW_OOM)
        # forgetting frees memory
        self.conc_drop = register(conn, CONC_DROP, Flags.ALLOW_OOM)


def run(script: Script, keys: Sequence[KeyT], args: Sequence[Any], client: Any = None) -> Any:
    """Call a script; a typed seam over redis-py's loosely typed ``Script.__call__``."""
    return script(keys=list(keys), args=list(args), client=client)


def queue_loaded(pipe: Pipeline, script: Script, keys: Sequence[KeyT], args: Sequence[Any]) -> None:
    """Queue ``EVALSHA`` of ``script`` in ``pipe`` without redis-py's own check: a
    script called through redis-py in a pipeline makes the pipeline ask ``SCRIPT
    EXISTS`` before every execute, a round trip of its own. Only for a caller that
    has just seen ``SCRIPT EXISTS`` answer yes on this server, and that handles the
    ``NOSCRIPT`` reply left if the cache was flushed in between (``SCRIPT FLUSH``: a
    restart or a failover drops the connection instead)."""
    pipe.evalsha(script.sha, len(keys), *keys, *args)


@dataclass(frozen=True, slots=True)
class Packed:
    """A script call's arguments with the bytes that send them (:func:`pack`), so that
    a call decided ahead costs only a socket write when it is due."""

    args: Sequence[Any]
    data: list[bytes]


def pack(conn: Redis, script: Script, keys: Sequence[KeyT], args: Sequence[Any]) -> Packed:
    """``EVALSHA script keys args`` as the bytes any connection of ``conn``'s pool
    sends. Raises what taking a connection from the pool raises (Redis unreachable)."""
    pool = conn.connection_pool
    connection: Any = pool.get_connection()
    try:
        return Packed(args, connection.pack_command("EVALSHA", script.sha, len(keys), *keys, *args))
    finally:
        pool.release(connection)


def send(connection: Any, command: tuple[Any, ...]) -> None:
    """Send ``command`` (its name first, with no space in it; no ``bytearray`` or
    ``memoryview`` arguments) on a redis-py connection. With redis-py's hiredis packer
    it is packed here in the one C call that packer makes: the packer first walks every
    argument in Python to copy bytearrays and memoryviews, which a dispatch write (tens
    of thousands of arguments) never has, a few µs per dispatched job in a burst."""
    if _HIREDIS_PACKER is not None and isinstance(
        getattr(connection, "_command_packer", None), _HIREDIS_PACKER
    ):
        connection.send_packed_command([hiredis.pack_command(command)])
    else:
        connection.send_command(*command)


class Pending:
    """A script call sent but not answered yet, so the caller can work while Redis runs
    it (dispatch decides the next batch meanwhile). :meth:`result` collects the reply;
    :meth:`abandon` drops the call's connection when the caller gives up on it."""

    def __init__(
        self, conn: Redis, script: Script, keys: Sequence[KeyT], args: Sequence[Any] | Packed
    ) -> None:
        packed = args if isinstance(args, Packed) else None
        args = args.args if isinstance(args, Packed) else args
        self._client, self._script, self._keys, self._args = conn, script, keys, args
        self._pool = conn.connection_pool
        self._conn: Any = self._pool.get_connection()
        try:
            if packed is not None:
                self._conn.send_packed_command(packed.data)  # type: ignore[no-untyped-call]
            else:
                send(self._conn, ("EVALSHA", script.sha, len(keys), *keys, *args))
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
    batches: Iterable[tuple[C, Sequence[Any] | Packed | None]],
    settle: Callable[[C, Any], bool],
    *,
    ahead: int = 1,
) -> None:
    """Call ``script`` once per batch, with the next batch prepared while Redis runs
    the last one: ``batches`` is consumed lazily, so its Python work overlaps Redis's.
    Each batch's reply goes to ``settle(context, reply)`` in order; ``settle`` returning
    False stops there (nothing more is sent). A batch whose arguments are None is not
    sent; its reply is None.

    With ``ahead=1`` a batch is settled before the next one is sent (dispatch: a
    deposed leader must not send more). With ``ahead=2`` the next batch is sent while
    the last still runs, so Redis finds it queued and never waits for the client to
    settle and send: only for batches that do not depend on each other's outcome
    (the upsert chunks, each write its own compare-and-set); one sent before a
    refusal was settled still runs."""
    in_flight: deque[tuple[C, Pending | None]] = deque()
    try:
        for context, args in batches:
            while len(in_flight) >= ahead:
                done, call = in_flight.popleft()
                if not settle(done, None if call is None else call.result()):
                    return
            in_flight.append((context, None if args is None else Pending(conn, script, keys, args)))
        while in_flight:
            done, call = in_flight.popleft()
            if not settle(done, None if call is None else call.result()):
                return
    finally:
        for _, call in in_flight:
            if call is not None:
                call.abandon()
