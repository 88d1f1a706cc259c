"""Redis memory: a full Redis (``OOM``) as an error, and the headroom it has left.

With ``maxmemory-policy noeviction`` (the only policy that keeps rqbeat's data, see
:mod:`scheduler.eviction`) a full Redis refuses writes with ``OOM``. rqbeat's scripts
declare their flags (:class:`scheduler.scripts.Flags`), so the refusal comes before
a script runs: nothing of it is written. Callers turn the refusal into
:class:`~scheduler.errors.RedisFull`, with what was and was not written.

Reading memory needs ``INFO`` (``CONFIG GET`` is often disabled on managed Redis);
a server or ACL user that refuses it reads as "unknown", never as an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis.exceptions
from redis import Redis

from scheduler.errors import RedisFull

log = logging.getLogger(__name__)

#: Above this share of maxmemory, `rqbeat check` reports Redis as (nearly) full.
FULL_RATIO = 0.95


@dataclass(frozen=True, slots=True)
class Memory:
    """``INFO memory`` and ``INFO errorstats`` as rqbeat reads them."""

    used_bytes: int
    max_bytes: int  # 0: no limit
    oom_refusals: int  # writes refused with OOM since the server started

    @property
    def ratio(self) -> float | None:
        return self.used_bytes / self.max_bytes if self.max_bytes else None

    def fits(self, more_bytes: int) -> bool:
        return not self.max_bytes or self.used_bytes + more_bytes <= self.max_bytes


def read_memory(conn: Redis) -> Memory | None:
    """Used and maximum memory, and the OOM refusals so far; None when INFO is refused."""
    try:
        info = conn.info("memory")
        errors = conn.info("errorstats")
    except redis.exceptions.ResponseError as exc:  # NOPERM (ACL) or INFO renamed away
        log.debug("cannot read Redis memory (INFO refused: %s)", exc)
        return None
    oom = errors.get("errorstat_OOM")
    refusals = int(oom.get("count", 0)) if isinstance(oom, dict) else 0
    return Memory(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)), refusals)


def memory_problem(memory: Memory) -> str | None:
    """Pure: the health problem when Redis is (nearly) full, else None."""
    ratio = memory.ratio
    if ratio is None or ratio < FULL_RATIO:
        return None
    return (
        f"Redis memory is {ratio:.0%} of maxmemory ({memory.used_bytes} of {memory.max_bytes} bytes): "
        "writes are refused with OOM when it is full; free memory or raise maxmemory"
    )


def memory_note(memory: Memory) -> str | None:
    """Pure: a warning when Redis refused writes for memory earlier but is not full now."""
    if not memory.oom_refusals or memory_problem(memory):
        return None
    return (
        f"Redis refused {memory.oom_refusals} write(s) with OOM since it started "
        "(INFO errorstats): memory was full at some point"
    )


@contextmanager
def full_is_error(what: str, written: str = "nothing was written") -> Iterator[None]:
    """Turn Redis's ``OOM`` refusal inside the block into :class:`RedisFull`."""
    try:
        yield
    except redis.exceptions.OutOfMemoryError as exc:
        raise RedisFull(what, written) from exc
