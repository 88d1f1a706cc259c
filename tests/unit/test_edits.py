"""Pure parts of edits: ``Schedule.edited``, apply's field diff and owner changes, and
the text of ``apply``'s summary and ``show``'s values."""

from __future__ import annotations

import pytest

from scheduler import apply as applying
from scheduler.cli.applycmd import summary_line
from scheduler.cli.detail import readable, time_text
from scheduler.clock import parse_iso_ms
from scheduler.errors import InvalidSchedule
from scheduler.model import Schedule

BASE = Schedule.from_dict(
    {"id": "n", "target": "app.jobs.run", "cron": "0 2 * * *", "args": [1], "max_attempts": 3}, owner="cli"
)


def test_edited_changes_only_what_is_given() -> None:
    edited = BASE.edited({"queue": "reports"})
    assert (edited.queue, edited.args, edited.cron, edited.max_attempts, edited.owner) == (
        "reports",
        (1,),
        "0 2 * * *",
        3,
        "cli",
    )


def test_edited_switches_the_trigger_kind_and_unsets_with_none() -> None:
    every = BASE.edited({"every": "20s", "max_attempts": None})
    assert (every.cron, every.every_ms, every.max_attempts) == (None, 20_000, None)
    assert every.edited({"cron": "@daily"}).every_ms is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": "other"}, "id"),
        ({"owner": "api"}, "owner"),
        ({"cron": "1 2 3", "every": "1m"}, "cron"),
        ({"every": "0s"}, "every"),
        ({"bogus": 1}, "bogus"),
        ({"target": None}, "target"),
    ],
)
def test_edited_refuses_what_add_refuses(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        BASE.edited(changes)
    assert refused.value.field == field


def test_field_changes_and_owner_changes() -> None:
    new = Schedule.from_dict(
        {"id": "n", "target": "app.jobs.run", "every": "1h", "args": [1], "max_attempts": 3}, owner="apply:a"
    )
    changes = applying.field_changes(BASE.to_json(), new)
    assert changes is not None
    assert [(c.key, c.old, c.new) for c in changes] == [
        ("every", None, "1h"),
        ("owner", "cli", "apply:a"),
        ("cron", "0 2 * * *", None),
    ]
    assert applying.field_changes("{not json", new) is None
    plan = applying.plan([new], {"n": (BASE.to_json(), "due")}, owner="apply:a")
    assert plan.owner_changes() == [applying.OwnerChange("n", "cli", "apply:a")]
    api_made = Schedule.from_dict({"id": "n", "target": "app.jobs.run", "every": "1h"})
    assert applying.stored_owner(api_made.to_json()) == "api"  # the stored form leaves it out
    assert applying.stored_owner("[]") is None


def test_summary_lines() -> None:
    plan = applying.Plan(owner="apply:a", create=[BASE], prune=["old"])
    assert summary_line(plan, total=1, dry_run=False, elapsed_s=3.44) == (
        "applied 1 schedule: 1 created, 0 updated, 0 unchanged, 1 pruned in 3.4 s"
    )
    assert summary_line(plan, total=1, dry_run=True, elapsed_s=0) == (
        "dry run, nothing written: 1 schedule: 1 to create, 0 to update, 0 unchanged, 1 to prune"
    )


def test_show_values_read_as_written() -> None:
    assert readable([1, "a", None]) == '[1, "a", null]'
    assert readable({"k": True}) == '{"k": true}'
    assert readable("Grüße") == "Grüße"
    now = parse_iso_ms("2027-03-28T00:00:00Z")
    assert time_text("2027-03-28T01:00:00.000Z", "Europe/Berlin", now) == (
        "2027-03-28T01:00:00.000Z (2027-03-28 03:00:00 CEST, in 1h)"
    )
    assert time_text("2027-03-27T23:59:00.000Z", "UTC", now) == "2027-03-27T23:59:00.000Z (1m ago)"
