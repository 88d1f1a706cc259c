"""Reading many schedule hashes: one reader, one chunk size.

``rqbeat ls``, the client's ``get``/``list``, ``rqbeat check`` and ``rqbeat status``
all read schedules by the thousand. Each chunk of :data:`CHUNK` ids is one pipelined
round trip (the due scores with one ZMSCORE, then an HGETALL per hash), so no single
reply holds the server long and no read is one round trip per schedule. A key of
another type (set by hand) is reported with its type, never raised: one damaged key
must not hide the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import redis.exceptions
from redis import Redis

from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.records import ScheduleRecord, decode_record, text

T = TypeVar("T")

#: Schedule hashes per pipelined round trip.
CHUNK = 1_000
#: ``TYPE``'s reply for a schedule key that is a hash, and for one that does not exist.
HASH, MISSING = "hash", "none"


@dataclass(frozen=True, slots=True)
class StoredHash:
    """One schedule key as read."""

    schedule_id: str
    key_type: str  # HASH, MISSING, or the type a key set by hand has
    fields: dict[str, str] = field(default_factory=dict)  # empty unless a hash
    due_ms: int | None = None  # its score in the due zset


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size``: one round trip each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_hashes(
    conn: Redis, keys: Keys, ids: Sequence[str], *, missing: bool = False
) -> Iterator[StoredHash]:
    """The schedule keys of ``ids``, in order, :data:`CHUNK` per round trip. Ids
    without a key (removed since they were listed) are skipped unless ``missing``."""
    for part in chunks(ids):
        pipe = conn.pipeline(transaction=False)
        pipe.zmscore(keys.due, list(part))  # one command for the chunk's due scores (Redis 6.2+)
        for schedule_id in part:
            pipe.hgetall(keys.schedule(schedule_id))
        scores, *replies = pipe.execute(raise_on_error=False)
        if isinstance(scores, redis.exceptions.ResponseError):  # the due key has another type
            scores = [None] * len(part)
        for schedule_id, reply, score in zip(part, replies, scores, strict=True):
            due_ms = round(float(score) * 1000) if score is not None else None
            if isinstance(reply, redis.exceptions.ResponseError):  # WRONGTYPE: set by hand
                kind = str(text(conn.type(keys.schedule(schedule_id))))
                yield StoredHash(schedule_id, kind, due_ms=due_ms)
            elif reply:
                fields = {str(text(k)): str(text(v)) for k, v in reply.items()}
                yield StoredHash(schedule_id, HASH, fields, due_ms)
            elif missing:
                yield StoredHash(schedule_id, MISSING, due_ms=due_ms)


def read_records(
    conn: Redis,
    keys: Keys,
    ids: Sequence[str],
    *,
    decode: Callable[[str, str | None], Schedule] | None = None,
) -> Iterator[ScheduleRecord]:
    """The schedules ``ids`` decoded (vanished ones skipped); a key of another type
    is a broken record that says so. ``decode`` as :func:`~scheduler.records.decode_record`."""
    for stored in read_hashes(conn, keys, ids):
        raw = (
            stored.fields
            if stored.key_type == HASH
            else {"error": f"key has type {stored.key_type}, not hash"}
        )
        yield decode_record(stored.schedule_id, raw, stored.due_ms, decode=decode)
