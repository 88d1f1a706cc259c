"""The Prometheus alerting rules of docs/metrics.md: the YAML block there is what
people copy, so it is checked with ``promtool check rules`` (Debian's ``prometheus``
package; ``.ci/run`` installs it) and, always, for the structure Prometheus expects
and for metric names rqbeat really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.processes import REPO

_BLOCK = re.compile(r"```yaml\n(groups:\n.*?)```", re.DOTALL)
#: Every metric name a rule may use (a typo would make the alert silently never fire).
EXPORTED = {
    "rqbeat_leader",
    "rqbeat_schedule_last_success_timestamp_seconds",
    "rqbeat_schedule_consecutive_failures",
    "rqbeat_schedule_lateness_seconds",
    "rqbeat_lateness_seconds_bucket",
    "rqbeat_schedules_failing",
}


def readme_rules() -> str:
    [block] = _BLOCK.findall((REPO / "docs" / "metrics.md").read_text())
    return str(block)


def test_the_rules_have_the_structure_prometheus_expects() -> None:
    data: Any = yaml.safe_load(readme_rules())
    [group] = data["groups"]
    names = [rule["alert"] for rule in group["rules"]]
    assert {"RqbeatNoLeader", "RqbeatScheduleWithoutSuccess", "RqbeatConsecutiveFailures"} <= set(names)
    assert any("Late" in name for name in names)
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        used = set(re.findall(r"\brqbeat_[a-z_]+", rule["expr"]))
        assert used and used <= EXPORTED, (rule["alert"], used - EXPORTED)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool (apt-get install prometheus)")
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rqbeat.rules.yml"
    path.write_text(readme_rules())
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout
