"""apply validates each shape of settings once and copies it under each id: the
copies must be exactly what validating each schedule alone gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler import apply as applying
from scheduler import cron
from scheduler.errors import InvalidSchedule
from scheduler.model import Schedule

OWNER = "apply:shapes"


def document(schedules: dict[str, dict[str, Any]], **defaults: Any) -> dict[str, Any]:
    return {"defaults": defaults, "schedules": schedules}


def alone(doc: dict[str, Any], schedule_id: str) -> Schedule:
    return Schedule.from_dict(
        {**doc["defaults"], **doc["schedules"][schedule_id], "id": schedule_id}, owner=OWNER
    )


def test_schedules_sharing_their_settings_equal_each_built_alone() -> None:
    body = {"target": "app.jobs.report", "cron": "30 2 * * *"}
    doc = document({f"r{i}": dict(body) for i in range(5)}, timezone="Europe/Berlin", max_attempts=3)
    built = applying.parse_document(doc, owner=OWNER)
    assert [s.id for s in built] == [f"r{i}" for i in range(5)]
    for schedule in built:
        expected = alone(doc, schedule.id)
        assert schedule == expected
        assert schedule.to_dict() == expected.to_dict()
        assert schedule.to_json() == expected.to_json()
        assert schedule.trigger == expected.trigger


def test_a_cron_hashed_by_id_is_compiled_per_schedule() -> None:
    doc = document({f"h{i}": {"target": "app.jobs.report", "cron": "H H * * *"} for i in range(20)})
    built = applying.parse_document(doc, owner=OWNER)
    after = 0
    fires = {cron.next_fire_ms(s.trigger, after) for s in built}
    assert fires == {cron.next_fire_ms(alone(doc, s.id).trigger, after) for s in built}
    assert len(fires) > 1  # not one copy of the first schedule's resolved time


def test_a_value_equal_to_a_valid_one_but_of_another_type_is_still_refused() -> None:
    # True == 1 in Python: a shape keyed by values alone would take it for max_attempts = 1
    doc = document(
        {
            "a": {"target": "app.jobs.report", "every": "1h", "max_attempts": 1},
            "b": {"target": "app.jobs.report", "every": "1h", "max_attempts": True},
        }
    )
    with pytest.raises(InvalidSchedule) as refused:
        applying.parse_document(doc, owner=OWNER)
    assert refused.value.field == "schedules.b.max_attempts"


def test_a_bad_id_in_a_shared_shape_is_refused_by_name() -> None:
    doc = document(
        {
            "good": {"target": "app.jobs.report", "every": "1h"},
            "bad id": {"target": "app.jobs.report", "every": "1h"},
        }
    )
    with pytest.raises(InvalidSchedule) as refused:
        applying.parse_document(doc, owner=OWNER)
    assert refused.value.field == "schedules.bad id.id"


def test_unhashable_values_are_built_alone() -> None:
    doc = document(
        {f"x{i}": {"target": "app.jobs.report", "every": "1h", "args": [1, {"k": i}]} for i in range(3)}
    )
    built = applying.parse_document(doc, owner=OWNER)
    assert [s.args for s in built] == [(1, {"k": i}) for i in range(3)]
    assert applying.shape_of({"args": [1]}) is None


def realistic_file(path: Path, n: int) -> Path:
    """``n`` schedules as the register benchmark writes them (bench/register.py)."""
    lines = ['[defaults]\ntimezone = "Europe/Berlin"\nmax_attempts = 3\n\n']
    for i in range(n):
        cron_expr = f"{i % 60} {i // 60 % 24} * * *"
        target = "myapp.tasks.reports.daily_summary"
        lines.append(f'[schedules.report-{i:07d}]\ntarget = "{target}"\ncron = "{cron_expr}"\n\n')
    path.write_text("".join(lines))
    return path


def test_a_file_of_a_million_realistic_schedules_is_not_too_large(tmp_path: Path) -> None:
    # estimated from 1,000 of them (each table is the same length): ~93 MB
    per_thousand = realistic_file(tmp_path / "k.toml", 1000).stat().st_size
    assert per_thousand * 1000 < applying.MAX_FILE_BYTES


def test_a_file_over_the_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = realistic_file(tmp_path / "big.toml", 10)
    monkeypatch.setattr(applying, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(InvalidSchedule, match="is larger than"):
        applying.load_file(path, group="big")
