"""Bulk schedule creation for large N, byte-for-byte in the layout ``Client.upsert`` writes.

``Client.upsert_many`` runs one Lua script per schedule and builds a validated
``Schedule`` for each; that is what ``rqbeat apply`` costs and the registration
benchmark measures it. To set up 100k or 1M schedules quickly, the other benchmarks
write the same keys directly over a raw RESP pipeline:

    HSET <ns>:schedule:<id> version 1 updated_at <iso> <scheduler.stored.encode(...)>
                            state due fire_at <iso> attempt 1
    ZADD <ns>:due <fire epoch s> <id>
    SADD <ns>:ids <id>

:func:`check_layout` proves the equivalence on every run: it upserts one schedule with
the real client and compares the hash it wrote (field names, definition text, state)
with a directly written one, and fails loudly if the store's layout has drifted.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis import Redis

from scheduler import Client, Schedule, stored
from scheduler.clock import iso, redis_now_ms
from scheduler.keys import Keys
from scheduler.records import text

CHUNK = 20_000
PLACEHOLDER = "BENCHIDPLACEHOLDER"


def resp(*parts: bytes) -> bytes:
    """One command in the Redis wire protocol."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


@dataclass(frozen=True)
class Spec:
    """What every benchmark schedule looks like, apart from its id and trigger."""

    target: str = "bench.jobs.noop"

    def schedule(self, schedule_id: str, cron: str) -> Schedule:
        return Schedule(id=schedule_id, target=self.target, cron=cron)


class Definitions:
    """The stored fields (:func:`scheduler.stored.encode`) for many ids: the stored form
    leaves the id to the key, so they are built once per cron expression (a Schedule
    per id would dominate the set-up time of 1M schedules)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._fields: dict[str, tuple[bytes, ...]] = {}

    def json(self, schedule_id: str, cron: str) -> tuple[bytes, ...]:
        fields = self._fields.get(cron)
        if fields is None:
            encoded = stored.encode(self.spec.schedule(PLACEHOLDER, cron))
            fields = self._fields[cron] = tuple(x.encode() for pair in encoded.items() for x in pair)
            assert PLACEHOLDER.encode() not in b"".join(fields), "the stored form has no id"
        return fields


def write(
    port: int,
    namespace: str,
    rows: Iterable[tuple[str, int, tuple[bytes, ...]]],
    now_ms: int,
    chunk: int = CHUNK,
) -> int:
    """Write ``(id, fire_ms, definition fields)`` rows as due schedules; returns the count."""
    keys = Keys(namespace)
    due, ids, prefix = keys.due.encode(), keys.ids.encode(), f"{namespace}:schedule:".encode()
    updated = iso(now_ms).encode()
    written = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        buf: list[bytes] = []
        pending = 0
        for schedule_id, fire_ms, definition in rows:
            sid = schedule_id.encode()
            buf.append(
                resp(
                    b"HSET",
                    prefix + sid,
                    b"version",
                    b"1",
                    b"updated_at",
                    updated,
                    *definition,
                    b"state",
                    b"due",
                    b"fire_at",
                    iso(fire_ms).encode(),
                    b"attempt",
                    b"1",
                )
            )
            buf.append(resp(b"ZADD", due, b"%.3f" % (fire_ms / 1000), sid))
            buf.append(resp(b"SADD", ids, sid))
            pending += 3
            written += 1
            if pending >= chunk * 3:
                _flush(sock, buf, pending)
                buf, pending = [], 0
        if pending:
            _flush(sock, buf, pending)
    return written


def _flush(sock: socket.socket, buf: list[bytes], replies: int) -> None:
    # Redis buffers the replies while we send, so sending everything first cannot deadlock.
    sock.sendall(b"".join(buf))
    data = bytearray()
    while data.count(b"\r\n") < replies:
        more = sock.recv(1 << 20)
        if not more:
            raise ConnectionError("redis closed the connection during the bulk write")
        data += more
    if data.startswith(b"-") or b"\r\n-" in data:
        raise RuntimeError(f"bulk write refused: {bytes(data[:200])!r}")


def seed(
    conn: Redis,
    port: int,
    n: int,
    fire_of: Callable[[int], int],
    cron_of: Callable[[int, int], str],
    *,
    namespace: str = "rqbeat",
    spec: Spec | None = None,
    id_prefix: str = "s",
) -> list[str]:
    """Create ``n`` due schedules ``<prefix>-<i>``; schedule i fires at ``fire_of(i)`` with
    the cron expression ``cron_of(i, fire_ms)``. Returns the ids."""
    spec = spec or Spec()
    defs = Definitions(spec)
    width = max(6, len(str(n)))
    ids = [f"{id_prefix}-{i:0{width}d}" for i in range(n)]
    now_ms = redis_now_ms(conn)

    def rows() -> Iterable[tuple[str, int, tuple[bytes, ...]]]:
        for i, schedule_id in enumerate(ids):
            fire = fire_of(i)
            yield schedule_id, fire, defs.json(schedule_id, cron_of(i, fire))

    write(port, namespace, rows(), now_ms)
    conn.incr(Keys(namespace).revision)
    # Spot-check the substitution against real Schedule objects.
    for i in {0, n // 2, n - 1}:
        fire = fire_of(i)
        expected = spec.schedule(ids[i], cron_of(i, fire)).to_json()
        found = stored.read_text(conn, Keys(namespace).schedule(ids[i]))
        assert found == expected, f"definition of {ids[i]} differs from Schedule.to_json()"
    return ids


def check_layout(conn: Redis, port: int, spec: Spec | None = None) -> None:
    """Fail unless a directly written schedule looks like one ``Client.upsert`` wrote."""
    spec = spec or Spec()
    namespace = "benchlayoutcheck"
    keys = Keys(namespace)
    client = Client(conn, namespace)
    real = spec.schedule("layout-real", "0 0 * * *")
    client.upsert(real)
    real_hash = _decoded(conn.hgetall(keys.schedule(real.id)))
    fire_ms = round(float(conn.zscore(keys.due, real.id) or 0) * 1000)
    write(port, namespace, [("layout-raw", fire_ms, Definitions(spec).json("layout-raw", "0 0 * * *"))], 0)
    raw_hash = _decoded(conn.hgetall(keys.schedule("layout-raw")))
    try:
        assert sorted(real_hash) == sorted(raw_hash), (
            f"fields differ: {sorted(real_hash)} vs {sorted(raw_hash)}"
        )
        for name in ("version", "state", "attempt", "fire_at"):
            assert real_hash[name] == raw_hash[name], f"{name!r}: {real_hash[name]!r} vs {raw_hash[name]!r}"
        for name in stored.SETTING_FIELDS:
            assert real_hash.get(name) == raw_hash.get(name), f"{name!r} differs"
        assert conn.zscore(keys.due, "layout-raw") == conn.zscore(keys.due, real.id)
        assert conn.smembers(keys.ids) == {b"layout-real", b"layout-raw"}
    finally:
        stray = list(conn.scan_iter(f"{namespace}:*"))
        if stray:
            conn.delete(*stray)


def _decoded(raw: dict[bytes | str, bytes | str]) -> dict[str, str]:
    """An HGETALL reply with text keys and values."""
    return {str(text(k)): str(text(v)) for k, v in raw.items()}
