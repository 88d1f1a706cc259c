"""Scenario 4, memory: Redis ``used_memory`` per idle schedule.

On a fresh private Redis (default config: ``hash-max-listpack-value 64``): read
``used_memory``, write N idle schedules as in scenario 3 (direct pipelined writes in
``Client.upsert``'s layout), read it again; bytes per schedule = delta / N. Measured
at 100k and 1M (1M skipped with --quick). Two cross-checks are reported beside it:
the same for 10k schedules created by the real ``Client.upsert_many``, and
``MEMORY USAGE`` of one schedule hash with its encoding, and the same 100k on a server
set to ``hash-max-listpack-value 256`` (so the hash fits the compact encoding). Not part of the target but
what a schedule costs once it has run for a while: ``MEMORY USAGE`` of a history
stream at its cap (1,000 entries shaped like ``dispatched``/``succeeded``).
"""

from __future__ import annotations

import time

from redis import Redis
from redis.typing import EncodableT, FieldT

from bench.core import Context, Result, Target
from bench.idle import seed_idle
from bench.seed import check_layout
from scheduler import Client, Schedule
from scheduler.clock import iso, redis_now_ms
from scheduler.keys import HISTORY_MAXLEN
from scheduler.records import text

NAME = "memory"
TITLE = "4. Memory"


def used(conn: Redis) -> int:
    return int(conn.info("memory")["used_memory"])


def history_at_cap(conn: Redis) -> tuple[int, int]:
    """MEMORY USAGE of a history stream filled to HISTORY_MAXLEN like a live one."""
    key = "bench:history-sample"
    fire = redis_now_ms(conn) // 1000 * 1000
    pipe = conn.pipeline(transaction=False)
    for i in range(HISTORY_MAXLEN):
        fire_iso, at = iso(fire + i * 60_000), iso(fire + i * 60_000 + 3)
        job = f"nightly-report-{fire + i * 60_000}-1"
        fields: dict[FieldT, EncodableT] = {
            "event": "dispatched",
            "fire_at": fire_iso,
            "job_id": job,
            "attempt": 1,
            "epoch": 7,
            "at": at,
        }
        pipe.xadd(key, fields, maxlen=HISTORY_MAXLEN, approximate=True)
        pipe.xadd(
            key, {"event": "succeeded", "fire_at": fire_iso, "job_id": job, "at": at}, maxlen=HISTORY_MAXLEN
        )
    pipe.execute()
    size, entries = int(conn.memory_usage(key, samples=0) or 0), int(conn.xlen(key))
    conn.delete(key)
    return size, entries


def breakdown(conn: Redis, n: int) -> str:
    """Where the bytes of one schedule are: its hash, and its share of the due zset and id set."""
    key = "rqbeat:schedule:s-000000"
    encoding = text(conn.object("encoding", key))
    usage = conn.memory_usage(key, samples=0)
    definition = text(conn.hget(key, "definition")) or ""
    due = int(conn.memory_usage("rqbeat:due", samples=0) or 0) / n
    ids = int(conn.memory_usage("rqbeat:ids", samples=0) or 0) / n
    return (
        f"one schedule hash is {encoding or '?'}-encoded, MEMORY USAGE {usage} B "
        f"(definition {len(definition.encode())} B: `{definition}`); per schedule the due zset "
        f"takes {due:.0f} B and the ids set {ids:.0f} B."
    )


def run(ctx: Context) -> Result:
    sizes = [100_000] if ctx.quick else [100_000, 1_000_000]
    res = Result(NAME, TITLE, __doc__ or "")
    for n in sizes:
        label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        reps = ctx.reps if n < 1_000_000 else 1
        for rep in range(reps):
            with ctx.redis(f"memory-{label}-{rep}") as server:
                conn = server.client()
                check_layout(conn, server.port)
                before = used(conn)
                t0 = time.monotonic()
                seed_idle(conn, server.port, n)
                after = used(conn)
                took = time.monotonic() - t0
                ctx.log(f"memory n={n}: {(after - before) / n:.0f} B/schedule (seeded in {took:.1f}s)")
                res.metric(
                    f"N={label}: used_memory per schedule",
                    "B",
                    target=Target("<=", 350, "≤ 350"),
                    digits=0,
                ).values.append((after - before) / n)
                if rep == 0 and n == sizes[0]:
                    res.notes.append(breakdown(conn, n))
    with ctx.redis("memory-listpack", extra=["--hash-max-listpack-value", "256"]) as server:
        conn = server.client()
        n = sizes[0]
        before = used(conn)
        seed_idle(conn, server.port, n)
        res.metric(f"N={n // 1000}k, server set to hash-max-listpack-value 256", "B", digits=0).values.append(
            (used(conn) - before) / n
        )
        res.notes.append("With `hash-max-listpack-value 256`: " + breakdown(conn, n))
    with ctx.redis("memory-api") as server:
        conn = server.client()
        before = used(conn)
        n = 10_000
        Client(conn).upsert_many(
            [Schedule(id=f"s-{i:06d}", target="bench.jobs.noop", cron="0 3 * * *") for i in range(n)]
        )
        res.metric("N=10k via Client.upsert_many: used_memory per schedule", "B", digits=0).values.append(
            (used(conn) - before) / n
        )
        stream, entries = history_at_cap(conn)
    res.notes.append(
        f"A history stream at its cap (MAXLEN ~{HISTORY_MAXLEN}: {entries} entries after "
        f"{HISTORY_MAXLEN} runs of one `dispatched` + one `succeeded` entry each): MEMORY USAGE "
        f"{stream:,} B — what every schedule that has run ~500+ times costs on top of the above."
    )
    return res
