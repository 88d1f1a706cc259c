"""The short chaos run (~80 s): every basic fault and most of the new ones once, then
the audit must be clean.

Three ``rqbeat run`` replicas (each behind its own TCP proxy), three ``rqbeat worker``
processes and a plain ``rq worker``, ~40 schedules; the faults, in a seeded random
order: kill -9 of the leader, SIGSTOP of the leader past its lease, kill -9 of a busy
worker and its work horse, kill -9 of Redis (AOF, appendfsync always), a partition
and a reset of the leader's link to Redis; a worker's clock 300 s off, a graceful
Redis restart, Redis wiped (``rqbeat check`` must report it; the rig re-applies the
schedule file), Redis at maxmemory, an edit storm. ``make chaos`` runs every fault
for minutes with more schedules (the replicas' skew and the overload too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.chaos.driver import BASIC_FAULTS
from devtools.chaos.run import ChaosConfig, run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the short chaos run, minutes

#: The new faults the short run exercises (a replica skew and an overload hold the
#: cluster for longer than this run may take; ``make chaos`` has them).
NEW = ("worker-skew", "redis-restart", "redis-wipe", "maxmemory", "edit-storm")


@pytest.mark.timeout(400)
def test_short_chaos_run_loses_no_fire(tmp_path: Path) -> None:
    kinds = (*BASIC_FAULTS, *NEW)
    # settle_s is a limit, not a wait: it must outlast the longest a run can stay "started"
    # after its worker died, which for a plain `rq worker` is RQ's execution ttl (the job
    # monitoring interval, 30 s, plus RQ's 60 s grace) plus a watchdog look (<= 30 s).
    config = ChaosConfig(
        duration_s=0, schedules=40, workdir=tmp_path, gap_s=1.5, hold_s=4, settle_s=150, faults=kinds
    )
    result = run_chaos(config)
    report = result.report
    print(
        f"chaos: {len(result.faults)} faults in {result.chaos_s:.0f}s, settled in {result.settle_s:.0f}s; "
        f"due {report.due}, ran {report.ran}, dropped {dict(report.dropped)}, "
        f"lost to data loss {report.lost_to_data_loss}, triggered {report.triggered}, "
        f"duplicates {len(report.duplicates)}, lag p50 {report.lag(0.5)} ms max {report.lag(1.0)} ms, "
        f"epochs {result.epoch_first}->{result.epoch_last}"
    )
    assert {f.kind for f in result.faults} == set(kinds)
    assert result.ok, "\n".join(result.problems())
    assert report.due > 100 and report.ran > 0
    assert not report.overlaps
    # The wipe was reported (how many fires it cost depends on what was pending then).
    assert [f.reported for f in result.faults if f.kind == "redis-wipe"] == [True]
    # A fault the cluster shrugged off without a leader change would mean the driver
    # did not inject what it says it did.
    assert result.epoch_last - result.epoch_first >= 4
