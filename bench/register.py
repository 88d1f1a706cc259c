"""Scenario 7, bulk registration: ``rqbeat apply`` of a TOML file with N schedules.

A generated file of N ``[schedules.<id>]`` tables (100k; 10k with --quick), each a
dotted target and a 5-field cron expression (the minute varies), is applied to an
empty private Redis with ``python -m scheduler --redis-url ... apply FILE``; the
wall time of the whole command (interpreter start, TOML parsing, validation,
reading what exists, writing) gives schedules per second. Also timed: applying the
same file again once (every schedule unchanged, nothing written) and, for reference, the
bare CLI start-up (``python -m scheduler --version``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.core import Context, Result, Target
from bench.env import REPO

NAME = "register"
TITLE = "7. Bulk registration"


def write_toml(path: Path, n: int) -> None:
    with path.open("w") as f:
        f.write('[defaults]\ntarget = "bench.jobs.noop"\n\n')
        for i in range(n):
            f.write(f'[schedules.s-{i:06d}]\ncron = "{i % 60} * * * *"\n\n')


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:5])}... exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def run(ctx: Context) -> Result:
    n = 10_000 if ctx.quick else 100_000
    label = f"{n // 1000}k"
    res = Result(NAME, TITLE, __doc__ or "")
    path = ctx.workdir / f"schedules-{label}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_toml(path, n)
    startup = timed([sys.executable, "-m", "scheduler", "--version"])
    for rep in range(ctx.reps):
        with ctx.redis(f"register-{rep}") as server:
            conn = server.client()
            cli = [sys.executable, "-m", "scheduler", "--redis-url", server.url, "apply", str(path)]
            ctx.log(f"rqbeat apply of {n} schedules, rep {rep + 1}/{ctx.reps}")
            first = timed(cli)
            stored = conn.scard("rqbeat:ids")
            if stored != n:
                raise RuntimeError(f"apply stored {stored} schedules, expected {n}")
            again = timed(cli) if rep == 0 else 0.0
        ctx.log(f"  {n / first:,.0f} schedules/s")
        res.metric(
            f"N={label}: apply to an empty Redis",
            "schedules/s",
            target=Target(">=", 20_000, "≥ 20,000"),
            digits=0,
        ).values.append(n / first)
        res.metric(f"N={label}: apply wall time", "s", digits=2).values.append(first)
        if again:
            res.metric(f"N={label}: re-apply, all unchanged", "schedules/s", digits=0).values.append(
                n / again
            )
    res.metric("CLI start-up (`--version`)", "s", digits=2).values.append(startup)
    res.notes.append(f"File: {path.stat().st_size / 1e6:.1f} MB of TOML.")
    return res
