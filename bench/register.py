"""Scenario 7, bulk registration: ``rqbeat apply`` of a TOML file with N schedules.

A generated file of N realistic ``[schedules.<id>]`` tables (100k and 1M; 10k and
100k with --quick): a dotted target (``myapp.tasks.reports.daily_summary``), a
5-field cron expression (one of the 1,440 minutes of a day), and from ``[defaults]``
the zone ``Europe/Berlin`` and ``max_attempts = 3``; apply makes each owned by
``apply:<file name>``. It is applied to an empty private Redis with
``python -m scheduler --redis-url ... apply FILE``; the wall time of the whole
command (interpreter start, TOML parsing, validation, reading what exists, writing)
gives schedules per second. Also timed: applying the same file again once (every
schedule unchanged, nothing written) and, for reference, the bare CLI start-up
(``python -m scheduler --version``). The targets do not import in the benchmark's
process, as on a scheduler host without the app: apply warns once per target.
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
TARGET_PER_S = 30_000
#: What every generated schedule shares (the ``[defaults]`` table).
DEFAULTS = 'timezone = "Europe/Berlin"\nmax_attempts = 3\n'
REALISTIC_TARGET = "myapp.tasks.reports.daily_summary"


def label(n: int) -> str:
    return f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"


def write_toml(path: Path, n: int, *, target: str = REALISTIC_TARGET, cron: str | None = None) -> Path:
    """N realistic schedules ``report-<i>``; ``cron`` (default: minute i of the day, at
    its Berlin wall time) for every one when given. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write(f"[defaults]\n{DEFAULTS}\n")
        for i in range(n):
            expr = cron or f"{i % 60} {i // 60 % 24} * * *"
            f.write(f'[schedules.report-{i:07d}]\ntarget = "{target}"\ncron = "{expr}"\n\n')
    return path


def apply_command(url: str, path: Path) -> list[str]:
    return [sys.executable, "-m", "scheduler", "--redis-url", url, "apply", "--quiet", str(path)]


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:5])}... exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def run(ctx: Context) -> Result:
    sizes = [10_000, 100_000] if ctx.quick else [100_000, 1_000_000]
    res = Result(NAME, TITLE, __doc__ or "")
    startup = timed([sys.executable, "-m", "scheduler", "--version"])
    for n in sizes:
        path = write_toml(ctx.workdir / f"schedules-{label(n)}.toml", n)
        reps = ctx.reps if n < 1_000_000 else 1
        for rep in range(reps):
            with ctx.redis(f"register-{label(n)}-{rep}") as server:
                conn = server.client()
                cli = apply_command(server.url, path)
                ctx.log(f"rqbeat apply of {n} schedules, rep {rep + 1}/{reps}")
                first = timed(cli)
                stored = conn.scard("rqbeat:ids")
                if stored != n:
                    raise RuntimeError(f"apply stored {stored} schedules, expected {n}")
                again = timed(cli) if rep == 0 else 0.0
            ctx.log(f"  {n / first:,.0f} schedules/s")
            res.metric(
                f"N={label(n)}: apply to an empty Redis",
                "schedules/s",
                target=Target(">=", TARGET_PER_S, f"≥ {TARGET_PER_S:,}"),
                digits=0,
            ).values.append(n / first)
            res.metric(f"N={label(n)}: apply wall time", "s", digits=2).values.append(first)
            if again:
                res.metric(f"N={label(n)}: re-apply, all unchanged", "schedules/s", digits=0).values.append(
                    n / again
                )
        res.notes.append(f"N={label(n)}: file of {path.stat().st_size / 1e6:.1f} MB of TOML.")
    res.metric("CLI start-up (`--version`)", "s", digits=2).values.append(startup)
    return res
