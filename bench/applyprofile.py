"""Where ``rqbeat apply``'s time goes: ``python -m bench.applyprofile [N]``.

Runs the steps of ``rqbeat apply FILE`` in this process, in the command's order and
with the cycle collector off as the command has it, on scenario 7's realistic file of
N schedules (default 100k) and a private empty Redis: read and parse the TOML, build
the schedules, check their targets, read what is stored, plan, write. Prints per step
the wall time and this process's CPU time per schedule, and redis-server's CPU per
schedule over the read and the write (``INFO cpu``). ``--cprofile FILE`` also writes
a ``cProfile`` of the whole run (its overhead inflates the Python steps).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import tempfile
import time
from pathlib import Path

import tomli
from redis import Redis

from bench.register import write_toml
from devtools.processes import RedisServer
from scheduler import apply as applying
from scheduler.cli.importcheck import Target, check_targets
from scheduler.store import Client, stored_of

OWNER = "apply:schedules"


class Steps:
    """Wall and CPU time per named step, taken one after the other."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def done(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[name], self.cpu[name] = wall - self._wall, cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def redis_cpu_s(conn: Redis) -> float:
    info = conn.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(path: Path, n: int, workdir: Path) -> None:
    server = RedisServer(workdir / "redis")
    server.start()
    try:
        conn = server.client()
        client = Client(conn)
        steps = Steps()
        document = tomli.loads(path.read_text(encoding="utf-8"))
        steps.done("read and parse the TOML (tomli)")
        schedules = applying.parse_document(document, owner=OWNER)
        steps.done("build and validate the schedules")
        check_targets([Target(s.id, s.target, s.id) for s in schedules], None, paths=(), strict=False)
        steps.done("check the targets")
        redis_before = redis_cpu_s(conn)
        rows = client.read_rows([s.id for s in schedules])
        steps.done("read what is stored")
        plan = applying.plan(schedules, stored_of(rows), owner=OWNER)
        steps.done("plan")
        client.upsert_many(plan.create + plan.update, read=rows)
        steps.done("write (pipelined UPSERT)")
        redis_s = redis_cpu_s(conn) - redis_before
        assert conn.scard("rqbeat:ids") == n, "not every schedule was written"
    finally:
        server.stop()
    total = sum(steps.wall.values())
    print(f"{n:,} schedules in {total:.2f} s ({n / total:,.0f}/s), this process then redis-server:")
    print("| step | wall s | wall µs/schedule | CPU µs/schedule |\n|---|---:|---:|---:|")
    for name, wall in steps.wall.items():
        print(f"| {name} | {wall:.2f} | {wall / n * 1e6:.1f} | {steps.cpu[name] / n * 1e6:.1f} |")
    print(f"| redis-server, read + write | | | {redis_s / n * 1e6:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=100_000)
    parser.add_argument("--cprofile", type=Path, default=None, help="also write a cProfile here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rqbeat-applyprofile-") as tmp:
        workdir = Path(tmp)
        path = write_toml(workdir / "schedules.toml", args.n)
        gc.disable()  # as `rqbeat apply` runs
        profiler = cProfile.Profile() if args.cprofile else None
        if profiler is not None:
            profiler.enable()
        run(path, args.n, workdir)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.cprofile)


if __name__ == "__main__":
    main()
