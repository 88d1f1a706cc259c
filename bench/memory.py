"""Scenario 4, memory: Redis ``used_memory`` per idle schedule, created by ``rqbeat apply``.

On a fresh private Redis (default config: ``hash-max-listpack-value 64``): ``MEMORY
PURGE`` and read ``used_memory``; ``rqbeat apply`` a file of N realistic schedules
(scenario 7's file: target ``myapp.tasks.reports.daily_summary``, a daily cron,
``Europe/Berlin``, ``max_attempts = 3``, owner ``apply:<file>``; no replica runs, so all stay
idle); ``MEMORY PURGE`` and read it again; bytes per schedule = delta / N.
Measured at 100k and 1M (1M skipped with --quick). Beside it: where one schedule's
bytes are (``MEMORY USAGE`` and ``OBJECT ENCODING`` of its hash, its share of the due
zset and of the id set), the same for 10k schedules created by the Python API
(``Client.upsert_many``), and what a schedule costs once it has run for a while:
``MEMORY USAGE`` of a history stream at its cap (1,000 entries shaped like
``dispatched``/``succeeded``).
"""

from __future__ import annotations

from redis import Redis
from redis.typing import EncodableT, FieldT

from bench.core import Context, Result, Target
from bench.register import apply_command, label, timed, write_toml
from scheduler import Client, Schedule, stored
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


def purged_used(conn: Redis) -> int:
    conn.memory_purge()
    return used(conn)


#: Schedule hashes measured for the mean (spread over the file: their crons differ in length).
SAMPLED_HASHES = 1_000


def hash_sizes(conn: Redis, n: int) -> str:
    """MEMORY USAGE of a spread sample of the schedule hashes: the mean and each size seen
    (one character more of cron can move a listpack to the next allocator class)."""
    step = max(1, n // SAMPLED_HASHES)
    sizes = [
        int(conn.memory_usage(f"rqbeat:schedule:report-{i:07d}", samples=0) or 0) for i in range(0, n, step)
    ]
    seen = ", ".join(f"{sizes.count(size)} of {size} B" for size in sorted(set(sizes)))
    return f"{sum(sizes) / len(sizes):.0f} B on average over {len(sizes)} ({seen})"


def breakdown(conn: Redis, n: int) -> str:
    """Where the bytes of one schedule are: its hash, and its share of the due zset and id set."""
    key = "rqbeat:schedule:report-0000000"
    encoding = text(conn.object("encoding", key))
    usage = conn.memory_usage(key, samples=0)
    fields = {str(text(k)): str(text(v)) for k, v in conn.hgetall(key).items()}
    shown = ", ".join(f"`{k}` {v}" for k, v in fields.items() if k in stored.SETTING_FIELDS)
    due = int(conn.memory_usage("rqbeat:due", samples=0) or 0) / n
    ids = int(conn.memory_usage("rqbeat:ids", samples=0) or 0) / n
    return (
        f"one schedule hash is {encoding or '?'}-encoded with {len(fields)} fields, MEMORY USAGE {usage} B "
        f"(its definition: {shown}); all schedule hashes: {hash_sizes(conn, n)}; "
        f"per schedule the due zset takes {due:.0f} B and the ids set {ids:.0f} B."
    )


def run(ctx: Context) -> Result:
    sizes = [100_000] if ctx.quick else [100_000, 1_000_000]
    res = Result(NAME, TITLE, __doc__ or "")
    for n in sizes:
        path = write_toml(ctx.workdir / f"memory-{label(n)}.toml", n)
        reps = ctx.reps if n < 1_000_000 else 1
        for rep in range(reps):
            with ctx.redis(f"memory-{label(n)}-{rep}") as server:
                conn = server.client()
                before = purged_used(conn)
                took = timed(apply_command(server.url, path))
                if conn.scard("rqbeat:ids") != n:
                    raise RuntimeError(f"apply stored {conn.scard('rqbeat:ids')} schedules, expected {n}")
                after = purged_used(conn)
                ctx.log(f"memory n={n}: {(after - before) / n:.0f} B/schedule (applied in {took:.1f}s)")
                res.metric(
                    f"N={label(n)}: used_memory per schedule (rqbeat apply)",
                    "B",
                    target=Target("<=", 350, "≤ 350"),
                    digits=0,
                ).values.append((after - before) / n)
                if rep == 0 and n == sizes[0]:
                    res.notes.append(breakdown(conn, n))
        path.unlink()
    with ctx.redis("memory-api") as server:
        conn = server.client()
        before = purged_used(conn)
        n = 10_000
        Client(conn).upsert_many(
            [
                Schedule.from_dict(
                    {"id": f"report-{i:07d}", "target": "myapp.tasks.reports.daily_summary",
                     "cron": f"{i % 60} {i // 60 % 24} * * *", "timezone": "Europe/Berlin", "max_attempts": 3}
                )
                for i in range(n)
            ]
        )  # fmt: skip
        res.metric("N=10k via Client.upsert_many: used_memory per schedule", "B", digits=0).values.append(
            (purged_used(conn) - before) / n
        )
        stream, entries = history_at_cap(conn)
    res.notes.append(
        f"A history stream at its cap (MAXLEN ~{HISTORY_MAXLEN}: {entries} entries after "
        f"{HISTORY_MAXLEN} runs of one `dispatched` + one `succeeded` entry each): MEMORY USAGE "
        f"{stream:,} B — what every schedule that has run ~500+ times costs on top of the above."
    )
    return res
