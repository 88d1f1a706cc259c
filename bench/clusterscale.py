"""One namespace on a Redis Cluster against the same on a single Redis, same run.

``RQ_KEY_PREFIX='{rqbeat}:rq' .venv-rq3/bin/python -m bench.clusterscale [N]``
(RQ 3: a cluster needs RQ's keys under the namespace's tag). For each Redis -- one
private ``redis-server``, then a private three-primary cluster with replicas
(devtools.rediscluster) -- on the user's path:

1. ``rqbeat apply`` of a TOML file with N realistic schedules (target
   ``myapp.tasks.reports.daily_summary``, a zone, ``max_attempts``), all due at one
   second T: wall time of the command -> schedules/s;
2. ``used_memory_dataset`` of the node holding the namespace (used_memory without
   replication buffers and other overhead), before and after -> B/schedule;
3. one ``rqbeat run`` replica; from T, the time until all N jobs are in RQ's queue
   (polled every 1 ms) -> fires/s of one leader.

Prints a Markdown table; not part of ``make bench`` (which runs on RQ 2.12).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis

from devtools.processes import REPO, Process, RedisServer, wait_for
from devtools.rediscluster import RedisCluster
from scheduler.slots import slot_of

NAMESPACE = "{rqbeat}"
PREFIX = "{rqbeat}:rq"
QUEUE_KEY = f"{PREFIX}:queue:default"
SLOT = slot_of(NAMESPACE)


def schedules_toml(n: int, second: int) -> str:
    lines = [
        "[defaults]",
        'target = "myapp.tasks.reports.daily_summary"',
        f'cron = "{second} * * * * *"',
        'timezone = "Europe/Berlin"',
        "max_attempts = 3",
        "",
    ]
    for i in range(n):
        lines += [f"[schedules.report-{i:07d}]", f'kwargs = {{ region = "r{i % 50}" }}', ""]
    return "\n".join(lines)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RQ_KEY_PREFIX": PREFIX}


def measure(url: str, owner: Redis, n: int, workdir: Path) -> dict[str, float]:
    """apply rate, memory per schedule and burst rate of one leader, against ``url``."""
    owner.flushall()
    now_s = int(owner.time()[0])
    lead_s = 30 + n // 1_000  # apply and a replica start first: ~15 s for 10k on a loaded 2-core box
    due_s = now_s + lead_s
    toml = workdir / "schedules.toml"
    toml.write_text(schedules_toml(n, due_s % 60))
    before = int(owner.info("memory")["used_memory_dataset"])
    args = [
        sys.executable,
        "-m",
        "scheduler",
        "--redis-url",
        url,
        "--namespace",
        NAMESPACE,
        "apply",
        str(toml),
    ]
    started = time.perf_counter()
    subprocess.run([*args, "--quiet"], env=env(), check=True, capture_output=True, timeout=600)
    apply_s = time.perf_counter() - started
    after = int(owner.info("memory")["used_memory_dataset"])
    replica = Process(
        [
            sys.executable,
            "-m",
            "scheduler",
            "--redis-url",
            url,
            "--namespace",
            NAMESPACE,
            "run",
            "--node",
            "r1",
        ],
        workdir / "replica.log",
        env=env(),
    )
    try:
        wait_for(lambda: owner.exists(f"{NAMESPACE}:leader"), timeout=60, what="a leader")
        if time.time() > due_s - 0.5:
            late = f"apply {apply_s:.1f} s, leader at T{time.time() - due_s:+.1f} s"
            raise RuntimeError(f"set-up overran the due second (n={n}; {late}); raise lead_s")
        done_s = _poll(owner, n, deadline=due_s + 120)
    finally:
        replica.stop()
    return {"apply_per_s": n / apply_s, "bytes": (after - before) / n, "fires_per_s": n / (done_s - due_s)}


def _poll(conn: Redis, n: int, deadline: float) -> float:
    while True:
        if conn.llen(QUEUE_KEY) >= n:
            return time.time()
        if time.time() > deadline:
            raise TimeoutError(f"only {conn.llen(QUEUE_KEY)} of {n} jobs queued")
        time.sleep(0.001)


@contextmanager
def single(workdir: Path) -> Iterator[tuple[str, Redis]]:
    server = RedisServer(workdir / "single")
    server.start()
    try:
        yield server.url, server.client()
    finally:
        server.stop()


@contextmanager
def cluster(workdir: Path) -> Iterator[tuple[str, Redis]]:
    servers = RedisCluster(workdir / "cluster")
    servers.start()
    try:
        yield servers.url, servers.client(servers.owner(SLOT))
    finally:
        servers.stop()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    if os.environ.get("RQ_KEY_PREFIX") != PREFIX:
        sys.exit(f"run with RQ_KEY_PREFIX='{PREFIX}' (and RQ 3)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rqbeat-clusterscale-") as tmp:
        for name, start in (("single redis-server", single), ("3-primary cluster", cluster)):
            with start(Path(tmp)) as (url, owner):
                where = Path(tmp) / name.replace(" ", "-")
                where.mkdir()
                rows.append((name, measure(url, owner, n, where)))
    print(f"N={n:,} schedules, namespace {NAMESPACE}, RQ_KEY_PREFIX={PREFIX}, one leader, no workers\n")
    print("| Redis | apply (schedules/s) | memory (B/schedule) | burst, one leader (fires/s) |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['apply_per_s']:,.0f} | {r['bytes']:,.0f} | {r['fires_per_s']:,.0f} |")
    base, other = rows[0][1], rows[1][1]
    ratio = [other[key] / base[key] for key in ("apply_per_s", "bytes", "fires_per_s")]
    print("| cluster / single | " + " | ".join(f"{r:.2f}" for r in ratio) + " |")


if __name__ == "__main__":
    main()
