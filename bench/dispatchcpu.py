"""The leader's CPU per dispatched job, in one process: ``python -m bench.dispatchcpu [N]``.

Scenario 1's schedules (N, default 20k, made by ``rqbeat apply`` of a realistic file:
target, a 6-field cron, zone ``Europe/Berlin``, ``max_attempts = 3``, the file's owner)
on a private empty Redis, all due at one second an hour ahead. Then, in this process,
a :class:`~scheduler.engine.dispatch.Dispatcher` dispatches them as of that second,
read, decide, write, until none is left: the leader's work per job without the
replica's start-up, lease or waits. Prints this process's CPU time per job
(``time.process_time``) and the wall rate. ``--log FILE`` adds the replica's per-job
INFO line (the text formatter, to FILE); ``--cprofile FILE`` writes a ``cProfile`` of
the dispatch (its overhead inflates every Python call).

The lease is stood in for by writing the leader key, as tests/integration/test_dispatch.py
does: nothing else here is written behind rqbeat's back.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import tempfile
import time
from pathlib import Path

from redis import Redis

from bench.burst import JOB, ZONE, daily_at
from bench.register import apply_command, timed, write_toml
from devtools.processes import RedisServer
from scheduler.clock import redis_now_ms
from scheduler.engine.dispatch import Dispatcher
from scheduler.keys import Keys
from scheduler.logs import formatter

TOKEN = "1:dispatchcpu"
#: The due second's distance: far enough for any apply to finish before it.
AHEAD_MS = 3_600_000
#: Dispatched this long after the due second (a replica wakes at it, then reads TIME).
LAG_MS = 5


def dispatch_all(port: int, due_ms: int, profile: cProfile.Profile | None) -> tuple[int, float, float]:
    """Dispatch everything due at ``due_ms``: (jobs, CPU s, wall s)."""
    dispatcher = Dispatcher(Redis(host="127.0.0.1", port=port), Keys())
    done = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    while True:
        size = dispatcher.dispatch(due_ms + LAG_MS, TOKEN, 1).size
        if not size:
            break
        done += size
    if profile is not None:
        profile.disable()
    return done, time.process_time() - cpu0, time.perf_counter() - wall0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dispatchcpu", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("n", type=int, nargs="?", default=20_000)
    parser.add_argument("--log", type=Path, help="log the per-job INFO lines to this file")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of the dispatch here")
    args = parser.parse_args()
    if args.log:
        handler = logging.FileHandler(args.log, "w")
        handler.setFormatter(formatter("text"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="rqbeat-dispatchcpu-"))
    server = RedisServer(work / "redis")
    server.start()
    try:
        conn = server.client()
        due_ms = (redis_now_ms(conn) + AHEAD_MS) // 1000 * 1000
        path = write_toml(work / "burst.toml", args.n, target=JOB, cron=daily_at(due_ms, ZONE))
        timed(apply_command(server.url, path))
        conn.set(Keys().leader, TOKEN)
        profile = cProfile.Profile() if args.cprofile else None
        done, cpu_s, wall_s = dispatch_all(server.port, due_ms, profile)
        queued = conn.llen("rq:queue:default")
        if done != args.n or queued != args.n:
            raise RuntimeError(f"dispatched {done}, queued {queued}, expected {args.n}")
        print(f"n={args.n} leader CPU {cpu_s / done * 1e6:.1f} µs/job, {done / wall_s:,.0f} jobs/s (wall)")
        if profile is not None:
            profile.dump_stats(args.cprofile)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
