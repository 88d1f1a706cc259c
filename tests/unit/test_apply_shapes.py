"""apply validates each shape of settings once and copies it under each id: the
copies must be exactly what validating each schedule alone gives."""

from __future__ import annotations

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
