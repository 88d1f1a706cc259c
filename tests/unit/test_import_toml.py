"""The TOML an import writes reads back as the same settings, for any JSON-like value."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.ops.importing import toml
from scheduler.ops.importing.found import Imported, seconds_text

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs"])),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(min_size=1, max_size=10), values, max_size=6))
def test_values_read_back_unchanged(settings: dict[str, Any]) -> None:
    found = Imported(source="test")
    found.schedules["s"] = settings
    assert tomllib.loads(toml.dumps(found))["schedules"]["s"] == settings


def test_notes_are_comments_and_the_file_applies() -> None:
    found = Imported(source="redbeat")
    found.add("nightly report", {"target": "myapp.tasks.reports.daily_summary", "cron": "30 2 * * *"})
    found.skip("solar", "a solar schedule has no rqbeat equivalent")
    document = tomllib.loads(toml.dumps(found))
    assert document == {
        "schedules": {"nightly-report": {"target": "myapp.tasks.reports.daily_summary", "cron": "30 2 * * *"}}
    }
    assert found.notes == [
        "nightly report: imported as 'nightly-report' (rqbeat ids use A-Z a-z 0-9 _ -)",
        "solar: not imported: a solar schedule has no rqbeat equivalent",
    ]


def test_ids_are_unique_and_invalid_schedules_become_notes() -> None:
    found = Imported(source="test")
    for _ in range(3):
        found.add("job", {"target": "myapp.jobs.a", "every": "10s"})
    found.add("bad", {"target": "myapp.jobs.a", "cron": "61 * * * *"})
    found.add("nulls", {"target": "myapp.jobs.a", "every": "10s", "args": [None]})
    assert list(found.schedules) == ["job", "job-2", "job-3"]
    assert found.notes[:2] == [
        "job: imported as 'job-2' (rqbeat ids use A-Z a-z 0-9 _ -)",
        "job: imported as 'job-3' (rqbeat ids use A-Z a-z 0-9 _ -)",
    ]
    assert found.notes[2].startswith("bad: not imported: cron")
    assert found.notes[3].startswith("nulls: not imported: TOML cannot hold")


@pytest.mark.parametrize(("seconds", "text"), [(300, "300s"), (0.25, "250ms"), (0, None), (0.0001, None)])
def test_seconds_text(seconds: float, text: str | None) -> None:
    assert seconds_text(seconds) == text
