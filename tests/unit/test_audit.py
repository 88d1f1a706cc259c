"""The pure parts of audited edits: what changed, who, and when a pause ends."""

from __future__ import annotations

import pytest

from scheduler.audit import API_BY, Edit, changes, cli_user, edit_of, parse_until, upsert_changes
from scheduler.clock import parse_iso_ms
from scheduler.errors import InvalidSchedule

NOW = parse_iso_ms("2027-03-27T12:00:00Z")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, {"cron": "0 3 * * *"}, ""),
        ({"cron": "0 3 * * *"}, {"cron": "0 3 * * *"}, ""),
        ({"cron": "0 3 * * *"}, {"cron": "0 4 * * *"}, 'cron: "0 3 * * *" -> "0 4 * * *"'),
        ({"target": "a.b"}, {"target": "a.b", "max_attempts": 3}, "max_attempts: - -> 3"),
        (
            {"queue": "reports", "every_ms": 1000},
            {"every_ms": 2000},
            'every_ms: 1000 -> 2000; queue: "reports" -> -',
        ),
        ({"args": [1]}, {"args": ["x" * 50]}, "args"),
        ({"id": "a", "cron": "@daily"}, {"id": "b", "cron": "@daily"}, ""),
    ],
)
def test_changes_names_each_field_and_shows_small_values(
    old: dict[str, object] | None, new: dict[str, object], expected: str
) -> None:
    assert changes(old, new) == expected


def test_an_edit_is_by_the_api_unless_told() -> None:
    assert edit_of(None, None) == Edit(by=API_BY, note="")
    assert edit_of(" deploy-bot ", " release 42 ") == Edit(by="deploy-bot", note="release 42")
    user, _, host = cli_user().partition("@")
    assert user and host


@pytest.mark.parametrize(
    ("by", "note"), [("", ""), ("   ", ""), ("a\nb", ""), ("x" * 101, ""), ("ok", "n" * 501)]
)
def test_an_edit_refuses_an_empty_or_multiline_by_and_a_long_note(by: str, note: str) -> None:
    with pytest.raises(InvalidSchedule):
        Edit(by=by, note=note)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW + 7_200_000),
        ("90", NOW + 90_000),
        ("1d12h", NOW + 129_600_000),
        ("2027-03-27T18:00:00Z", parse_iso_ms("2027-03-27T18:00:00Z")),
        ("2027-03-28T03:30:00+02:00", parse_iso_ms("2027-03-28T01:30:00Z")),
    ],
)
def test_until_is_an_iso_time_or_a_duration_from_now(text: str, expected: int) -> None:
    assert parse_until(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2027-03-27T11:00:00Z", "in the future"),
        ("2027-03-27T12:00:00Z", "in the future"),
        ("2027-03-27T18:00:00", "ISO time with a timezone"),
        ("2027-13-01T00:00:00Z", "ISO time with a timezone"),
        ("soon", "not a duration"),
        ("0s", "greater than zero"),
    ],
)
def test_an_until_in_the_past_or_unreadable_is_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidSchedule, match=reason):
        parse_until(text, NOW)


@pytest.mark.parametrize(
    ("definition", "state", "expected"),
    [
        (None, None, ""),
        ('{"cron":"0 3 * * *"}', "due", 'cron: "0 3 * * *" -> "0 4 * * *"'),
        ("not json", "broken", "definition (unreadable before)"),
        ('{"cron":"0 4 * * *"}', "broken", "state: broken -> due"),
    ],
)
def test_an_upsert_names_what_it_changed(definition: str | None, state: str | None, expected: str) -> None:
    assert upsert_changes(definition, '{"cron":"0 4 * * *"}', state) == expected
