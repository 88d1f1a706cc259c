"""Where the leader's time goes during a burst: ``python -m bench.profile``.

Runs scenario 1's burst (10k schedules due in the same second, no workers) with the
replica under a profiler and writes ``bench/PROFILE.md``:

* ``--tool py-spy`` (``pip install py-spy``; not a project dependency): sampled
  stacks of the replica, wall clock (``--idle``: time blocked on Redis counts),
  ``--nonblocking`` (the replica is never paused, so it runs at nearly full speed).
  Only samples inside the leader's loop (``Service._lead``) count. Reported: the
  loop's time by call site (the source line in ``_lead``, ``_attempt``, ...), by
  area of the leaf frame, and the top functions inclusive and self. The raw
  collapsed stacks go to ``bench/PROFILE-stacks.txt`` (flame graph input).
* ``--tool cprofile``: ``python -m cProfile`` around the replica, for call counts
  per dispatched job (its overhead distorts shares; use py-spy for those).
* ``--what-if``: the burst's throughput with one thing changed at a time: the
  replica logging at warning, the watchdog switched off (``bench/nowatchdog.py``),
  and, given ``--hiredis-python`` (an interpreter whose environment has the same
  packages plus hiredis), redis-py's C parser and packer.
"""

from __future__ import annotations

import argparse
import linecache
import pstats
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from bench.burst import burst_once
from bench.core import DASH, Context, Metric
from bench.report import environment

HERE = Path(__file__).resolve().parent
LOOP = "Service._lead"
SHOWN = ("git commit", "python", "redis-server", "redis-py", "hiredis", "rq", "nproc")
#: Functions whose time is split by the line they were executing (their call sites).
BREAKDOWN = [
    "Service._lead",
    "Dispatcher._attempt",
    "Dispatcher._write",
    "Dispatcher._job_data",
    "decide",
    "Watchdog._check_one",
]


def frame_parts(frame: str) -> tuple[str, str, int]:
    """``func (path:line)`` -> (func, path, line)."""
    name, _, where = frame.partition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    return name, path, int(line) if line.isdigit() else 0


@cache
def source(path: str, line: int) -> str:
    for root in sys.path:
        candidate = Path(root) / path
        if candidate.is_file():
            return linecache.getline(str(candidate), line).strip()
    return ""


class Samples:
    """Collapsed py-spy stacks restricted to the leader loop."""

    def __init__(self, paths: list[Path]) -> None:
        self.own: Counter[str] = Counter()
        self.incl: Counter[str] = Counter()
        self.sites: dict[str, Counter[tuple[int, str]]] = {f: Counter() for f in BREAKDOWN}
        self.loop = self.total = 0
        for path in paths:
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                self._add(stack.split(";"), int(count))

    def _add(self, frames: list[str], n: int) -> None:
        self.total += n
        parts = [frame_parts(f) for f in frames]
        if not any(name == LOOP for name, _, _ in parts):
            return
        self.loop += n
        name, path, _ = parts[-1]
        self.own[f"{name} ({path})"] += n
        for key in {f"{name} ({path})" for name, path, _ in parts}:
            self.incl[key] += n
        seen = set()
        for i, (name, path, line) in enumerate(parts):
            if name in self.sites and name not in seen:
                seen.add(name)
                leaf = "" if i + 1 < len(parts) else " (self)"
                self.sites[name][(line, source(path, line) + leaf)] += n

    def pct(self, c: int) -> str:
        return f"{100 * c / self.loop:.1f}"


def area(key: str) -> str:
    path = key.partition(" (")[2]
    for prefix, label in (
        ("scheduler/", "rqbeat (scheduler/)"),
        ("rq/", "RQ"),
        ("redis/", "redis-py"),
        ("logging/", "logging"),
        ("json/", "json"),
        ("socket.py", "socket"),
        ("croniter/", "croniter"),
        ("dateutil/", "dateutil (croniter)"),
        ("datetime.py", "datetime"),
    ):
        if path.startswith(prefix):
            return label
    return "other (stdlib, typing, enum, ...)"


def py_spy(ctx: Context, n: int, reps: int, rate: int) -> list[str]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    outs = [ctx.workdir / f"stacks-{i}.txt" for i in range(reps)]
    rates = []
    for i, out in enumerate(outs):
        launcher = [exe, "record", "--idle", "--nonblocking", "--rate", str(rate), "--format", "raw"]
        launcher += ["-o", str(out), "--", sys.executable]
        with ctx.redis(f"profile-{i}") as server:
            run = burst_once(ctx, server, n, f"profile-{i}", python=launcher, wrapped=True)
        rates.append(run.jobs_per_s)
        ctx.log(f"profiled burst {i + 1}/{reps}: {run.jobs_per_s:,.0f} jobs/s")
    (HERE / "PROFILE-stacks.txt").write_text("".join(p.read_text() for p in outs))
    s = Samples(outs)
    areas: Counter[str] = Counter()
    for key, c in s.own.items():
        areas[area(key)] += c
    lines = [
        f"py-spy {rate} Hz, wall clock (`--idle`, `--nonblocking`), {reps} bursts of {n:,}: "
        f"{s.loop} samples in the leader loop of {s.total} (the rest: start-up, waiting for the "
        f"due second, shutdown). Throughput while profiled: {', '.join(f'{r:,.0f}' for r in rates)} jobs/s.",
        "",
        "### By call site",
        "",
        "Share of the leader loop spent at each line (including what it calls).",
    ]
    for func in BREAKDOWN:
        sites = s.sites[func]
        if not sites:
            continue
        lines += ["", f"`{func}`:", "", "| % of loop | line | source |", "|---:|---:|---|"]
        lines += [f"| {s.pct(c)} | {ln} | `{text}` |" for (ln, text), c in sites.most_common(12)]
    lines += [
        "",
        "### Self time by area (leaf frame)",
        "",
        "| % of loop | area |",
        "|---:|---|",
        *(f"| {s.pct(c)} | {a} |" for a, c in areas.most_common()),
        "",
        "### Inclusive time by function (below the loop)",
        "",
        "| % of loop | function |",
        "|---:|---|",
        *[f"| {s.pct(c)} | `{f}` |" for f, c in s.incl.most_common(60) if c < s.loop][:35],
        "",
        "### Self time by function",
        "",
        "| % of loop | function |",
        "|---:|---|",
        *(f"| {s.pct(c)} | `{f}` |" for f, c in s.own.most_common(30)),
    ]
    return lines


def cprofile(ctx: Context, n: int) -> list[str]:
    out = ctx.workdir / "replica.prof"
    with ctx.redis("profile-cprofile") as server:
        python = [sys.executable, "-m", "cProfile", "-o", str(out)]
        run = burst_once(ctx, server, n, "profile-cprofile", python=python)
    stats = pstats.Stats(str(out))
    raw = stats.stats  # type: ignore[attr-defined]
    rows = ["| calls | per job | tottime s | cumtime s | function |", "|---:|---:|---:|---:|---|"]
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in sorted(
        raw.items(), key=lambda kv: kv[1][2], reverse=True
    )[:40]:
        where = _short_path(file)
        rows.append(
            f"| {calls} | {calls / n:.2f} | {tottime:.3f} | {cumtime:.3f} | `{func} ({where}:{line})` |"
        )
    return [
        f"cProfile, one burst of {n:,} ({run.jobs_per_s:,.0f} jobs/s under cProfile), top 40 by self time:",
        "",
        *rows,
    ]


def what_if(ctx: Context, n: int, reps: int, hiredis_python: str | None) -> list[str]:
    """Burst throughput with one thing changed at a time (no profiler attached)."""
    variants: list[tuple[str, dict[str, Any]]] = [
        ("as is", {}),
        ("replica at --log-level warning", {"log_level": "warning"}),
        (
            "watchdog switched off (bench/nowatchdog.py)",
            {"python": [sys.executable, str(HERE / "nowatchdog.py")]},
        ),
    ]
    if hiredis_python:
        probe = [hiredis_python, "-c", "import hiredis; print(hiredis.__version__)"]
        hiredis = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
        variants.append(
            (f"redis-py with hiredis {hiredis} (other interpreter)", {"python": [hiredis_python]})
        )
        variants.append(
            ("hiredis and watchdog off", {"python": [hiredis_python, str(HERE / "nowatchdog.py")]})
        )
    rows = ["| variant | jobs/s | leader CPU µs/job | redis-server CPU µs/job |", "|---|---:|---:|---:|"]
    for label, kwargs in variants:
        runs = []
        for i in range(reps):
            with ctx.redis(f"whatif-{len(rows)}-{i}") as server:
                runs.append(burst_once(ctx, server, n, f"whatif-{len(rows)}-{i}", **kwargs))
        ctx.log(f"what-if {label}: {', '.join(f'{r.jobs_per_s:,.0f}' for r in runs)} jobs/s")
        rows.append(
            f"| {label} | {_spread([r.jobs_per_s for r in runs], 0)} "
            f"| {_spread([r.leader_cpu_s / n * 1e6 for r in runs], 0)} "
            f"| {_spread([r.redis_cpu_s / n * 1e6 for r in runs], 0)} |"
        )
    return [f"Burst of {n:,}, {reps} runs per variant, `median [min{DASH}max]`:", "", *rows]


def _spread(values: list[float], digits: int) -> str:
    m = Metric("", "", values=values, digits=digits)
    return m.cell()


def _short_path(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", str(HERE.parent) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tool", choices=["py-spy", "cprofile", "both", "none"], default="both")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3, help="bursts profiled (py-spy)")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--what-if", action="store_true", help="also time variants (no watchdog, ...)")
    parser.add_argument("--hiredis-python", help="an interpreter with hiredis installed, for --what-if")
    parser.add_argument("--out", type=Path, default=HERE / "PROFILE.md")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rqbeat-profile-"))
    ctx = Context(quick=False, workdir=workdir, reps=args.reps)
    lines = [
        "# Profile of the leader during a burst dispatch",
        "",
        f"`{' '.join(['python -m bench.profile', *sys.argv[1:]])}`; method in bench/profile.py.",
        "",
        " · ".join(f"{k}: {v}" for k, v in environment().items() if k in SHOWN),
        "",
    ]
    if args.what_if:
        lines += ["## What if", "", *what_if(ctx, args.n, args.reps, args.hiredis_python), ""]
    if args.tool in ("py-spy", "both"):
        lines += ["## py-spy", "", *py_spy(ctx, args.n, args.reps, args.rate), ""]
    if args.tool in ("cprofile", "both"):
        lines += ["## cProfile", "", *cprofile(ctx, args.n), ""]
    args.out.write_text("\n".join(lines))
    ctx.log(f"wrote {args.out}; logs in {workdir}")


if __name__ == "__main__":
    main()
