"""One whole chaos run: start the rig, load the fleet, inject faults, settle, audit.

Shared by the short test (``tests/chaos/test_chaos_short.py``, inside ``make test``)
and the long run (``make chaos`` → ``bench/chaos.py`` → ``bench/CHAOS.md``).

The audited window is ``(start, end of faults]``: every fire due in it must have run
successfully or been dropped as the contract allows. After the last fault the
cluster is whole again and gets up to ``settle_s`` to catch up (retries back off, an
``all`` schedule works through its backlog); the audit is repeated until it is clean
or the time is up, and the last verdict stands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis.exceptions

from devtools.chaos.audit import Fault, Observed, Report, audit
from devtools.chaos.collector import Collector
from devtools.chaos.driver import FAULTS, Rig, drive, now_ms
from devtools.chaos.fleet import fleet, runs_per_s
from scheduler import Schedule
from scheduler.clock import redis_now_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ChaosConfig:
    duration_s: float
    schedules: int
    workdir: Path
    seed: int = 1
    lease: str = "2s"
    lease_s: float = 2.0
    gap_s: float = 3.0
    settle_s: float = 90.0
    hold_s: float = 20.0  # how long a skew, an edit storm, an overload lasts
    faults: Sequence[str] = FAULTS


@dataclass(kw_only=True)
class ChaosResult:
    config: ChaosConfig
    report: Report
    faults: list[Fault]
    incidents: list[str]
    notes: list[str]
    fleet: list[Schedule]
    asked_runs_per_s: float
    chaos_s: float  # from the first fault to the end of the last
    settle_s: float  # from the end of the last fault to a clean audit (or the limit)
    epoch_first: int
    epoch_last: int
    resumes: int
    collector_errors: int
    logs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.incidents

    def problems(self) -> list[str]:
        return self.report.problems() + [f"incident: {i}" for i in self.incidents]


def run_chaos(config: ChaosConfig) -> ChaosResult:
    schedules = fleet(config.schedules, config.seed)
    rig = Rig(
        config.workdir, lease=config.lease, lease_s=config.lease_s, seed=config.seed, hold_s=config.hold_s
    )
    try:
        rig.start()
        rig.write_fleet(schedules)
        rig.apply_fleet()
        start_ms = redis_now_ms(rig.conn)
        epoch_first = int(rig.conn.get(rig.keys.epoch) or 0)
        collector = Collector(
            rig.server.url,
            rig.keys,
            [s.id for s in schedules],
            rig.runs_file,
            resume=[s.id for s in schedules if s.pause_on_failure],
        )
        collector.start()
        began = time.monotonic()
        drive(rig, config.duration_s, config.gap_s, config.faults)
        rig.heal()
        end_ms, ended = now_ms(), time.monotonic()
        collector.stop()  # from here on the settle loop polls it
        report = _settle(
            collector, schedules, rig, start_ms=start_ms, end_ms=end_ms, settle_s=config.settle_s
        )
        settled = time.monotonic()
        collector.close()
        return ChaosResult(
            config=config,
            report=report,
            faults=list(rig.faults),
            incidents=list(rig.incidents),
            notes=list(rig.notes),
            fleet=schedules,
            asked_runs_per_s=runs_per_s(schedules, at_ms=start_ms),
            chaos_s=ended - began,
            settle_s=settled - ended,
            epoch_first=epoch_first,
            epoch_last=int(rig.conn.get(rig.keys.epoch) or 0),
            resumes=collector.resumes,
            collector_errors=collector.errors,
            logs=[p.log_path for p in rig.processes],
        )
    finally:
        rig.close()


def _settle(
    collector: Collector, schedules: list[Schedule], rig: Rig, *, start_ms: int, end_ms: int, settle_s: float
) -> Report:
    """Audit until clean or ``settle_s`` passed; the last report stands."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            collector.poll()
            observed = Observed(
                schedules=schedules,
                start_ms=start_ms,
                due_until_ms=end_ms,
                now_ms=collector.now_ms(),
                history=collector.history,
                runs=collector.runs,
                faults=rig.faults,
                finals=collector.finals(),
                history_gaps=collector.gaps,
            )
        except redis.exceptions.RedisError as exc:
            log.warning("settle round failed: %s", exc)
            time.sleep(1)
            continue
        report = audit(observed)
        if report.ok or time.monotonic() > deadline:
            return report
        log.info("settling: %s", "; ".join(report.problems()[:8]))
        time.sleep(1)  # let the cluster catch up before auditing again
