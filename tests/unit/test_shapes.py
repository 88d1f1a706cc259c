"""Definitions decoded once per shape (scheduler.shapes): what dispatch decodes a due
schedule with. The shared decode must equal the full one for every schedule, never
answer for content it was not made from (an edit), and refuse exactly as the full
decode does."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from scheduler import shapes, stored
from scheduler.clock import iso
from scheduler.engine.decide import DECIDED_FROM, Decision, Kind, decide
from scheduler.engine.dispatch import Dispatcher
from scheduler.errors import CorruptDefinition
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.records import decode_definition
from scheduler.stored import SETTING_FIELDS

T_MS = 1_800_000_000_000
#: The fields of a due row before the settings (see DECIDED_FROM).
STATE_FIELDS = DECIDED_FROM[: len(DECIDED_FROM) - len(SETTING_FIELDS)]
#: What `rqbeat apply` stores for a realistic schedule (the id is the key's).
REALISTIC: dict[str, Any] = {
    "target": "myapp.tasks.reports.daily_summary",
    "cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "max_attempts": 3,
}


def made(schedule_id: str, **changes: Any) -> Schedule:
    return Schedule.from_dict({"id": schedule_id, **REALISTIC, **changes}, owner="apply:reports.toml")


def settings_row(schedule: Schedule) -> list[bytes | None]:
    """The HMGET reply of SETTING_FIELDS for ``schedule``'s hash, bytes as Redis sends them."""
    fields = stored.encode(schedule)
    return [None if fields.get(name) is None else fields[name].encode() for name in SETTING_FIELDS]


def full(schedule_id: str, settings: list[bytes | None]) -> Schedule:
    return decode_definition(schedule_id, stored.row_text(SETTING_FIELDS, settings))


def due_row(schedule: Schedule, version: str = "1") -> list[bytes | None]:
    """An HMGET reply of protocol.DUE_FIELDS for a schedule in the stored form."""
    head: dict[str, bytes | None] = {"version": version.encode(), "state": b"due", "attempt": b"1"}
    head["fire_at"] = iso(T_MS).encode()
    return [*(head.get(name) for name in STATE_FIELDS), *settings_row(schedule)]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"cron": "H 3 * * *"},  # hashed by the id
        {"every": "30s", "cron": None, "queue": "low", "timeout": "5m"},
        {"args": [1, "two"], "kwargs": {"k": True}, "description": "[1]"},
        {"cron": ["0 9 * * *", "0 17 * * *"], "exclude": ["2030-12-25"]},
    ],
)
def test_the_shared_decode_equals_the_full_one_for_each_id(changes: dict[str, Any]) -> None:
    changes = {k: v for k, v in changes.items() if v is not None}
    if "every" in changes:
        raw = {"id": "a", **{k: v for k, v in REALISTIC.items() if k != "cron"}, **changes}
        schedules = [Schedule.from_dict({**raw, "id": sid}, owner="cli") for sid in ("a-1", "b-2")]
    else:
        schedules = [made(sid, **changes) for sid in ("a-1", "b-2")]
    for schedule in schedules:
        got = shapes.decode_settings(schedule.id, settings_row(schedule))
        assert got == full(schedule.id, settings_row(schedule)) == schedule
        assert got.id == schedule.id
        assert got.to_json() == schedule.to_json()
        assert got.trigger == schedule.trigger  # an H cron resolved under its own id


def test_schedules_of_one_shape_share_the_decode_work() -> None:
    one = shapes.decode_settings("report-1", settings_row(made("report-1")))
    two = shapes.decode_settings("report-2", settings_row(made("report-2")))
    assert (one.id, two.id) == ("report-1", "report-2")
    assert one.trigger is two.trigger  # compiled once, not per schedule


def test_an_edit_is_never_answered_from_the_shape_before_it() -> None:
    before = made("report-1")
    shapes.decode_settings("report-1", settings_row(before))
    after = made("report-1", cron="45 4 * * *", queue="urgent", max_attempts=5)
    got = shapes.decode_settings("report-1", settings_row(after))
    assert (got.cron, got.queue, got.max_attempts) == ("45 4 * * *", "urgent", 5)
    assert got == after


def test_shape_keys_are_the_fields_content() -> None:
    a, b = settings_row(made("x")), settings_row(made("y"))
    assert shapes.shape_of(a) == shapes.shape_of(b)  # the id is the key's, not a field
    assert shapes.shape_of(a) != shapes.shape_of(settings_row(made("x", max_attempts=4)))


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("cron", b"61 * * * *", "cron"),
        ("timezone", b"Mars/Olympus", "timezone"),
        ("target", b"not-dotted", "target"),
        ("colour", b"red", None),  # not a setting field: ignored by both
    ],
)
def test_a_damaged_shape_is_refused_as_the_full_decode_refuses_it(
    field: str, value: bytes, needle: str | None
) -> None:
    settings = settings_row(made("report-1"))
    if field in SETTING_FIELDS:
        settings[SETTING_FIELDS.index(field)] = value
    try:
        expected: Schedule | str = full("report-1", settings)
    except CorruptDefinition as exc:
        expected = str(exc)
    if isinstance(expected, Schedule):
        assert needle is None
        assert shapes.decode_settings("report-1", settings) == expected
        return
    for _ in range(2):  # the second time from the remembered shape
        with pytest.raises(CorruptDefinition) as raised:
            shapes.decode_settings("report-1", settings)
        assert str(raised.value) == expected
        assert needle is not None and needle in expected


def test_an_id_the_shared_decode_refuses_is_refused_by_the_full_decode() -> None:
    settings = settings_row(made("report-1"))
    shapes.decode_settings("report-1", settings)
    with pytest.raises(CorruptDefinition, match="id"):
        shapes.decode_settings("bad id!", settings)


def test_no_setting_fields_at_all_is_broken_in_dispatch() -> None:
    row = [{"version": b"1", "state": b"due", "attempt": b"1"}.get(name) for name in STATE_FIELDS]
    d = decide("report-1", row, T_MS, T_MS)
    assert d.kind == Kind.BROKEN
    assert "no 'definition'" in d.error


def test_dispatch_decides_a_shared_shape_under_each_schedules_own_id() -> None:
    runs = [decide(sid, due_row(made(sid)), T_MS, T_MS) for sid in ("r-1", "r-2")]
    assert [(d.kind, d.schedule_id) for d in runs] == [(Kind.RUN, "r-1"), (Kind.RUN, "r-2")]
    assert [d.schedule.id for d in runs if d.schedule] == ["r-1", "r-2"]
    assert runs[0].job_id.startswith("r-1-")


def decision(schedule: Schedule, version: str = "1") -> Decision:
    return Decision(schedule.id, Kind.RUN, schedule, T_MS, version=version)


def test_job_templates_are_shared_by_definition_and_follow_an_edit() -> None:
    dispatcher = Dispatcher(Redis(port=1), Keys("rqbeat"))  # never connects: templates only
    one = dispatcher._template(decision(made("r-1")))
    assert dispatcher._template(decision(made("r-2"))) is one
    edited = dispatcher._template(decision(made("r-1", queue="urgent", args=[7]), version="2"))
    assert edited is not one
    assert edited.queue == "urgent"
    assert one.queue == "default"
