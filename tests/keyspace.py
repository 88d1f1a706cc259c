"""A snapshot of a whole keyspace by content, for "nothing was written" checks.

Not ``DUMP`` bytes: a hash (or set) large enough for Redis's hashtable encoding is
serialized in the order of its dict, which an incremental rehash (advanced by plain
reads) reorders without any write, so equal contents gave unequal DUMPs now and
then. Each key is decoded by its type instead, into values that compare by content.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis import Redis

from scheduler.records import text

Key = bytes | str
Snapshot = dict[Key, tuple[str, Any]]


def snapshot(conn: Redis) -> Snapshot:
    """Every key with its type and decoded content: equal snapshots mean an equal
    keyspace (TTLs aside). Keys are read one by one: for test-sized keyspaces."""
    return {key: content(conn, key) for key in conn.keys("*")}


def content(conn: Redis, key: Key) -> tuple[str, Any]:
    """A key's type and its decoded content (``("none", None)`` when there is none)."""
    kind = str(text(conn.type(key)))
    readers: dict[str, Callable[[], Any]] = {
        "none": lambda: None,
        "string": lambda: conn.get(key),
        "hash": lambda: conn.hgetall(key),
        "set": lambda: frozenset(conn.smembers(key)),
        "zset": lambda: conn.zrange(key, 0, -1, withscores=True),  # by score, then member
        "list": lambda: conn.lrange(key, 0, -1),
        "stream": lambda: _stream(conn, key),
    }
    if kind not in readers:
        raise AssertionError(f"snapshot cannot read {key!r} of type {kind}")
    return kind, readers[kind]()


def _stream(conn: Redis, key: Key) -> tuple[Any, Any]:
    """The entries, and the last id generated (an added-then-deleted entry moves it)."""
    info = conn.xinfo_stream(key)
    return info["last-generated-id"], conn.xrange(key, "-", "+")
