"""The short chaos run (~90 s): every fault at least once, then the audit must be clean.

Three ``rqbeat run`` replicas (each behind its own TCP proxy), three ``rqbeat worker``
processes and a plain ``rq worker``, ~40 schedules; the faults: kill -9 of the
leader, SIGSTOP of the leader past its lease, kill -9 of a busy worker and its work
horse, kill -9 of Redis (AOF, appendfsync always), a partition and a reset of the
leader's link to Redis. ``make chaos`` runs the same for minutes with more schedules.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.chaos.driver import FAULTS
from devtools.chaos.run import ChaosConfig, run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the short chaos run, minutes


@pytest.mark.timeout(400)
def test_short_chaos_run_loses_no_fire(tmp_path: Path) -> None:
    result = run_chaos(ChaosConfig(duration_s=30, schedules=40, workdir=tmp_path, gap_s=2.0, settle_s=90))
    report = result.report
    print(
        f"chaos: {len(result.faults)} faults in {result.chaos_s:.0f}s, settled in {result.settle_s:.0f}s; "
        f"due {report.due}, ran {report.ran}, dropped {dict(report.dropped)}, "
        f"duplicates {len(report.duplicates)}, lag p50 {report.lag(0.5)} ms max {report.lag(1.0)} ms, "
        f"epochs {result.epoch_first}->{result.epoch_last}"
    )
    assert {f.kind for f in result.faults} == set(FAULTS)
    assert result.ok, "\n".join(result.problems())
    assert report.due > 100 and report.ran > 0
    # A fault the cluster shrugged off without a leader change would mean the driver
    # did not inject what it says it did.
    assert result.epoch_last - result.epoch_first >= 4
