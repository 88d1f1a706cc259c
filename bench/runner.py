"""Run the scenarios, bounded in time, and write the results file.

::

    python -m bench                 # everything, ~30 min on 2 cores -> bench/RESULTS.md
    python -m bench --quick         # ~2 min smoke run, small N     -> bench/RESULTS-quick.md
    python -m bench --only burst,ack                                 -> bench/RESULTS-partial.md

A partial or smoke run never overwrites the recorded full results unless ``--out``
says so. A scenario that fails is reported as an error and the others still run;
the exit code is 1 if any scenario failed (a missed target is not a failure).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench import (
    ack,
    backfill,
    burst,
    endtoend,
    failover,
    firelag,
    health,
    idle,
    memory,
    register,
    report,
    web,
    workers,
)
from bench.core import Context, Result

SCENARIOS: list[ModuleType] = [
    burst,
    firelag,
    idle,
    memory,
    ack,
    failover,
    register,
    web,
    health,
    workers,
    endtoend,
    backfill,
]
HERE = Path(__file__).resolve().parent
#: Full run: skip whatever would start after this many seconds.
BUDGET_S = 40 * 60  # 1M schedules are applied three times (burst, memory, registration)
QUICK_BUDGET_S = 4 * 60


def parse(argv: list[str]) -> argparse.Namespace:
    names = [s.NAME for s in SCENARIOS]
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, one repetition (~2 min)")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {', '.join(names)}")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 3, or 1 with --quick)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default depends on the run)")
    parser.add_argument(
        "--baseline",
        default="",
        help="git ref whose scheduler runs beside this tree's in the same run (firelag: before/after)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory with process logs")
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(only) - set(names))
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(names)}")
    args.only = only
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    reps = args.reps or (1 if args.quick else 3)
    chosen = [s for s in SCENARIOS if not args.only or s.NAME in args.only]
    full = not args.quick and not args.only
    out = args.out or HERE / (
        "RESULTS.md" if full else "RESULTS-quick.md" if args.quick else "RESULTS-partial.md"
    )
    budget = QUICK_BUDGET_S if args.quick else BUDGET_S
    command = shlex.join([_shown_python(), "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    workdir = Path(tempfile.mkdtemp(prefix="rqbeat-bench-"))
    ctx = Context(quick=args.quick, workdir=workdir, reps=reps, baseline=args.baseline)
    env = report.environment()
    load_before = _load()
    started = time.monotonic()
    results: list[Result] = []
    for scenario in chosen:
        if time.monotonic() - started > budget:
            results.append(
                Result(scenario.NAME, scenario.TITLE, scenario.__doc__ or "", error="skipped: time budget")
            )
            continue
        ctx.log(f"== {scenario.TITLE}")
        t0 = time.monotonic()
        try:
            result = scenario.run(ctx)
        except Exception as exc:  # noqa: BLE001 - report the failure, run the other scenarios
            traceback.print_exc()
            result = Result(
                scenario.NAME, scenario.TITLE, scenario.__doc__ or "", error=f"{type(exc).__name__}: {exc}"
            )
        result.elapsed_s = time.monotonic() - t0
        results.append(result)
        _print(result)
    elapsed = time.monotonic() - started
    text = report.render(
        results,
        env,
        command=command,
        quick=args.quick,
        reps=reps,
        elapsed_s=elapsed,
        load=(load_before, _load()),
    )
    out.write_text(text)
    ctx.log(f"wrote {out} ({elapsed / 60:.1f} min); process logs in {workdir}")
    if not args.keep and not any(r.error for r in results):
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if any(r.error for r in results) else 0)


def _print(result: Result) -> None:
    if result.error:
        print(f"   ERROR {result.error}")
    for m in result.metrics:
        verdict = f"  [{m.verdict()} {m.target.text}]" if m.target else ""
        print(f"   {m.name}: {m.cell()} {m.unit}{verdict}")
    for note in result.notes:
        print(f"   note: {note}")


def _shown_python() -> str:
    try:
        return os.path.relpath(sys.executable)
    except ValueError:
        return sys.executable


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
