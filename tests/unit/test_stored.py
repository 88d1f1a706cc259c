"""The stored form of a definition (scheduler.stored): one hash field per setting,
its exact round trip, and the read of the previous form (one JSON ``definition``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import stored
from scheduler.model import USER_KEYS, Schedule
from scheduler.records import decode_definition, decode_record

#: What `rqbeat apply` stores for a realistic schedule.
REALISTIC: dict[str, Any] = {
    "id": "daily-summary",
    "target": "myapp.tasks.reports.daily_summary",
    "cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "max_attempts": 3,
}


def realistic(**changes: Any) -> Schedule:
    return Schedule.from_dict({**REALISTIC, **changes}, owner="apply:reports")


def as_hash(schedule: Schedule, **state: str) -> dict[str, str]:
    """The hash UPSERT writes: the definition fields beside the state fields."""
    return {**stored.encode(schedule), "state": "due", "version": "1", "attempt": "1", **state}


def test_a_realistic_definition_is_short_readable_fields() -> None:
    fields = stored.encode(realistic())
    assert fields == {
        "target": "myapp.tasks.reports.daily_summary",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "max_attempts": "3",  # an integer: Redis keeps it as a listpack integer
        "owner": "apply:reports",
    }
    # every value fits Redis's default hash-max-listpack-value: the hash stays compact
    assert all(len(v.encode()) <= 64 for v in fields.values())
    assert all(len(k.encode()) <= 64 for k in fields)


def test_fields_rebuild_exactly_the_definition_text() -> None:
    schedule = realistic(
        args=[1, "two", {"three": 3.5}],
        kwargs={"region": "eu", "dry": False},
        description="true",  # a string that reads as JSON is stored as a JSON string
        queue="123",
        jitter="30s",
        pause_on_failure=True,
        metrics=True,
        misfire="all",
    )
    fields = stored.encode(schedule)
    assert fields["description"] == '"true"'
    assert fields["queue"] == '"123"'
    assert fields["jitter"] == "30s"
    assert fields["pause_on_failure"] == "true"
    assert stored.definition_text(as_hash(schedule)) == schedule.to_json()
    assert decode_definition(schedule.id, stored.definition_text(as_hash(schedule))) == schedule


def test_every_setting_is_a_field_and_no_state_field_is_a_setting() -> None:
    # new settings in model.USER_KEYS are carried without touching the encoding
    assert set(stored.SETTING_FIELDS) == set(USER_KEYS) - {"id"}
    state_fields = {"state", "version", "fire_at", "attempt", "job_id", "job_queue", "epoch",
                    "dispatched_at", "started_at", "worker", "ended_ms", "resumed_at",
                    "last_result", "last_run_at", "last_error", "failures", "lateness_ms",
                    "alerted", "last_success_at", "error", "updated_at"}  # fmt: skip
    assert not state_fields & set(stored.DEFINITION_FIELDS)


@given(st.text(max_size=40))
def test_any_text_value_round_trips(value: str) -> None:
    assert stored.decode_value(stored.encode_value(value)) == value


@pytest.mark.parametrize(
    "value", [0, 3, -1, True, False, None, [1, "a"], {"b": [2]}, 1.5, "", " 1", "NaN", "-Infinity"]
)
def test_json_values_round_trip(value: Any) -> None:
    assert stored.decode_value(stored.encode_value(value)) == value


def test_the_previous_form_still_loads() -> None:
    """A hash written before this encoding: the whole definition as one JSON field."""
    legacy = {
        "definition": '{"cron":"30 2 * * *","max_attempts":3,"owner":"apply:reports",'
        '"target":"myapp.tasks.reports.daily_summary","timezone":"Europe/Berlin"}',
        "state": "due",
        "version": "4",
        "fire_at": "2026-11-23T01:30:00.000Z",
        "attempt": "1",
    }
    record = decode_record("daily-summary", legacy, None)
    assert record.schedule == realistic()
    assert record.state == "due"
    assert record.version == 4
    # its text is the same as the new form's: apply finds such a schedule unchanged
    assert stored.definition_text(legacy) == realistic().to_json()


def test_a_write_deletes_the_previous_form_and_dropped_settings() -> None:
    legacy = {"definition": realistic().to_json(), "state": "due"}
    assert stored.stale_fields(legacy, stored.encode(realistic())) == ["definition"]
    before = as_hash(realistic(description="old"))
    assert stored.stale_fields(before, stored.encode(realistic())) == ["description"]
    assert stored.stale_fields(before, stored.encode(realistic(description="new"))) == []


def test_a_hash_without_a_definition_is_broken() -> None:
    assert stored.definition_text({"state": "due", "version": "1"}) is None
    record = decode_record("x", {"state": "due", "version": "1"}, None)
    assert record.state == "broken"
    assert record.error is not None and "no 'definition' field" in record.error


def test_a_damaged_setting_is_broken_with_its_name() -> None:
    raw = {**as_hash(realistic()), "max_attempts": "many"}
    record = decode_record("daily-summary", raw, None)
    assert record.state == "broken"
    assert record.error is not None and "max_attempts" in record.error


def test_a_row_of_fields_reads_like_the_hash() -> None:
    schedule = realistic()
    fields = as_hash(schedule)
    row = [fields.get(name, None) for name in stored.DEFINITION_FIELDS]
    assert stored.row_text(stored.DEFINITION_FIELDS, row) == schedule.to_json()
    as_bytes = [v.encode() if v is not None else None for v in row]
    assert json.loads(stored.row_text(stored.DEFINITION_FIELDS, as_bytes) or "") == json.loads(
        schedule.to_json()
    )


def test_layouts_number_each_field_list_once() -> None:
    layouts = stored.Layouts()
    assert layouts.number(("target", "cron")) == 1
    assert layouts.number(("target", "every", "queue")) == 2
    assert layouts.number(("target", "cron")) == 1  # the same list in the same order
    assert layouts.number(("cron", "target")) == 3  # values follow their layout's order
    assert layouts.args() == [3, 2, "target", "cron", 3, "target", "every", "queue", 2, "cron", "target"]


def test_no_layouts() -> None:
    assert stored.Layouts().args() == [0]
