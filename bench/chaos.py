"""``python -m bench.chaos`` (``make chaos``): the long chaos run -> bench/CHAOS.md.

::

    make chaos                                   # 10 minutes, 200 schedules
    CHAOS_MINUTES=3 CHAOS_SCHEDULES=100 make chaos
    python -m bench.chaos --minutes 1 --out /tmp/CHAOS.md

Three ``rqbeat run`` replicas behind TCP proxies, three ``rqbeat worker`` and one
plain ``rq worker``, a private AOF Redis; rounds of faults in a seeded random order
(kill -9 / SIGSTOP of the leader, kill -9 of a worker mid-job, kill -9 of Redis, a
partition and a reset of the leader's link; a worker's and the replicas' clocks 300 s
off, a graceful Redis restart, Redis wiped, Redis at maxmemory, an edit storm, an
overload: ``devtools/chaos/faults.py``) with a random quiet gap before each; then the
audit of ``devtools/chaos/audit.py``. Exit code 1 if the audit fails (a fire lost
unexplained, a schedule stuck, a duplicate nothing explains, a drop the policy does
not allow, a data loss ``rqbeat check`` did not report).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench.report import environment
from devtools.chaos.audit import Fault
from devtools.chaos.run import ChaosConfig, ChaosResult, run_chaos

HERE = Path(__file__).resolve().parent


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n", 1)[0])
    env = os.environ.get
    parser.add_argument(
        "--minutes", type=float, default=float(env("CHAOS_MINUTES", "10")), help="CHAOS_MINUTES"
    )
    parser.add_argument(
        "--schedules", type=int, default=int(env("CHAOS_SCHEDULES", "200")), help="CHAOS_SCHEDULES"
    )
    parser.add_argument(
        "--gap", type=float, default=float(env("CHAOS_GAP_S", "8")), help="quiet s between faults"
    )
    parser.add_argument(
        "--hold", type=float, default=float(env("CHAOS_HOLD_S", "20")), help="s a skew/storm/overload lasts"
    )
    parser.add_argument("--seed", type=int, default=int(env("CHAOS_SEED", "1")), help="fleet seed")
    parser.add_argument("--out", type=Path, default=HERE / "CHAOS.md", help="report file")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.schedules < 8 or args.gap < 0:
        parser.error("need --minutes > 0, --schedules >= 8 and --gap >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse(raw)
    # Faults and settle progress as they happen: a 10-minute run should not be silent.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="rqbeat-chaos-"))
    config = ChaosConfig(
        duration_s=args.minutes * 60,
        schedules=args.schedules,
        workdir=workdir,
        seed=args.seed,
        gap_s=args.gap,
        hold_s=args.hold,
        settle_s=180,
    )
    env = environment()
    load_before = os.getloadavg()
    started = time.monotonic()
    result = run_chaos(config)
    wall_s = time.monotonic() - started
    command = shlex.join(["python", "-m", "bench.chaos", *raw])
    facts = {
        **env,
        "load average before / after": f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}",
        "wall time": f"{wall_s:.0f} s",
        "process logs": str(workdir),
    }
    args.out.write_text(render(result, command, facts))
    print(f"{'PASS' if result.ok else 'FAIL'}: wrote {args.out}; logs in {workdir}")
    for problem in result.problems()[:30]:
        print("  ", problem)
    return 0 if result.ok else 1


def render(result: ChaosResult, command: str, facts: dict[str, str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    verdict = "**FAIL**"
    if result.ok:
        verdict = (
            "**PASS**: no fire lost unexplained, no overlap, no schedule stuck, every duplicate explained."
        )
    lines = [
        "# Chaos run",
        "",
        f"Recorded {when} with `{command}` (`make chaos`). Verdict: {verdict}",
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        "",
        *_setup(result),
        *_faults(result),
        *_figures(result),
        *_by_fault(result),
        *_duplicates(result),
        *_problems(result),
    ]
    return "\n".join(lines) + "\n"


def _setup(result: ChaosResult) -> list[str]:
    c, fleet = result.config, result.fleet
    policies = Counter(s.misfire.value for s in fleet)
    failing = [s for s in fleet if s.kwargs.get("fail_pct")]
    return [
        "## Set-up",
        "",
        f"- {c.duration_s / 60:g} min of faults in rounds (each kind once per round, seeded random "
        f"order), {c.gap_s / 2:g}-{c.gap_s * 1.5:g} s quiet before each, skews, storms and overloads "
        f"held {c.hold_s:g} s, lease {c.lease}, then up to {c.settle_s:g} s to settle "
        f"(took {result.settle_s:.0f} s).",
        "- 3 `rqbeat run` replicas, each behind its own TCP proxy; 3 `rqbeat worker` and 1 plain "
        "`rq worker` on queues `chaos`, `chaos-slow`; redis-server with AOF, `appendfsync always`. "
        "Workers run with `--job-monitoring-interval 1 --heartbeat-grace 2`: a dead worker's run is "
        "retried within ~3 s, and so is a live one whose heartbeat lapsed while Redis was down.",
        f"- {len(fleet)} schedules (seed {c.seed}), asking for {result.asked_runs_per_s:.1f} runs/s: "
        f"misfire {dict(policies)}; {sum(1 for s in fleet if s.catchup_window_ms)} with a catch-up "
        f"window; {len(failing)} failing at random ({sum(1 for s in failing if s.max_attempts)} with "
        f"max_attempts, {sum(1 for s in fleet if s.pause_on_failure)} with pause_on_failure, resumed 3 s "
        f"later by the audit's operator); {sum(1 for s in fleet if s.kwargs.get('sleep_ms'))} slow; "
        f"{len({s.timezone for s in fleet})} timezones.",
        "",
    ]


def _faults(result: ChaosResult) -> list[str]:
    lines = ["## Faults injected", "", "| fault | count | mean ms | max ms |", "|---|---:|---:|---:|"]
    kinds = sorted({f.kind for f in result.faults})
    for kind in kinds:
        spans = [f.end_ms - f.start_ms for f in result.faults if f.kind == kind]
        lines.append(f"| {kind} | {len(spans)} | {sum(spans) // len(spans)} | {max(spans)} |")
    lines += [
        "",
        "Durations: kill/stop/cut until another replica holds the lease; Redis down 1.5 s plus its "
        "restart; a worker kill is the kill and the start of a replacement; a skew, an edit storm and "
        "an overload are held, then undone; a wipe lasts until `rqbeat check` reported `data_lost` "
        "and `rqbeat apply` re-created the schedules; maxmemory is full for 4 s.",
        "",
        *(
            f"- {f.kind} at {f.start_ms}: {f.target}{_reported(f)}"
            for f in result.faults
            if f.kind in _DETAILED
        ),
        "",
    ]
    return lines


_DETAILED = ("worker-skew", "replica-skew", "redis-wipe", "maxmemory", "edit-storm", "overload")


def _detailed(result: ChaosResult) -> list[Fault]:
    return [f for f in result.faults if f.kind in _DETAILED]


def _reported(fault: Fault) -> str:
    if fault.kind != "redis-wipe":
        return ""
    return "; `rqbeat check` reported data_lost" if fault.reported else "; **not reported by `rqbeat check`**"


def _by_fault(result: ChaosResult) -> list[str]:
    """Due fires whose fire time fell inside a fault, by the fault's kind and outcome."""
    kinds = sorted({f.kind for f in result.faults})
    outcomes = sorted({o for _, _, o in result.report.outcomes})
    table: dict[str, Counter[str]] = {k: Counter() for k in kinds}
    for _, fire, outcome in result.report.outcomes:
        for fault in result.faults:
            if fault.start_ms <= fire <= fault.end_ms:
                table[fault.kind][outcome] += 1
    head = ["fault", *outcomes]
    lines = [
        "## Fires due during each fault",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(outcomes),
    ]
    lines += ["| " + " | ".join([k, *(str(table[k][o]) for o in outcomes)]) + " |" for k in kinds]
    return [*lines, ""]


def _figures(result: ChaosResult) -> list[str]:
    r = result.report
    rows = [
        ("fires due in the window", r.due),
        ("... run successfully", r.ran),
        ("... dropped as the contract allows", f"{sum(r.dropped.values())} {dict(r.dropped)}"),
        ("... lost to a data loss `rqbeat check` reported", r.lost_to_data_loss),
        ("... lost unexplained", len(r.lost)),
        ("runs of `rqbeat trigger` fires", r.triggered),
        ("overlaps (two runs of one schedule at once)", len(r.overlaps)),
        ("... across a reported data loss (the run in flight forgotten)", len(r.overlaps_across_loss)),
        ("stuck schedules at the end", len(r.stuck)),
        ("runs recorded (ok / failed by injection)", f"{r.runs_ok} / {r.runs_failed}"),
        ("fires run more than once", f"{len(r.duplicates)} ({len(r.unexplained)} unexplained)"),
        ("drops the policy does not allow", len(r.bad_drops)),
        ("first-dispatch lag p50 / p99 / max", f"{r.lag(0.5)} / {r.lag(0.99)} / {r.lag(1.0)} ms"),
        ("leader epochs (first -> last)", f"{result.epoch_first} -> {result.epoch_last}"),
        ("epochs that dispatched", len(r.epochs)),
        ("pause_on_failure resumes", result.resumes),
        ("collector rounds lost to outages", result.collector_errors),
    ]
    lines = ["## Figures", "", "| figure | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)]
    lines += [
        "",
        "Lag is the leader's decision time minus the nominal fire time, for first attempts; "
        "it includes every failover and outage above, on a machine shared with other work.",
        "",
    ]
    return lines


def _duplicates(result: ChaosResult) -> list[str]:
    dups = result.report.duplicates
    if not dups:
        return ["## Duplicates", "", "None: no fire ran successfully more than once.", ""]
    lines = ["## Duplicates", ""]
    for d in dups:
        lines.append(f"- `{d.key}`: {d.explanation or '**unexplained**'}")
    return [*lines, ""]


def _problems(result: ChaosResult) -> list[str]:
    notes = [f"- note: {n}" for n in result.notes]
    problems = [f"- {p}" for p in result.problems()]
    if not notes and not problems:
        return []
    return ["## Problems and notes", "", *problems[:100], *notes, ""]


if __name__ == "__main__":
    sys.exit(main())
