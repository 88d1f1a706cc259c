"""The allow-list's pure matching and parsing (scheduler.allow)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.allow import AllowList
from scheduler.clock import iso
from scheduler.engine.decide import decide
from scheduler.errors import ConfigError, InvalidSchedule
from scheduler.model import Schedule
from scheduler.protocol import DUE_FIELDS
from tests.badinput import PROFILE, nasty_text

NOW_MS = 1_800_000_000_000


def allow(text: str) -> AllowList:
    parsed = AllowList.parse(text)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("prefixes", "target", "permitted"),
    [
        ("myapp", "myapp.jobs.x", True),
        ("myapp", "myapplication.x", False),
        ("myapp.jobs", "myapp.jobs.report", True),
        ("myapp.jobs", "myapp.jobsx.report", False),
        ("myapp.jobs", "myapp.other.report", False),
        ("myapp.jobs.report", "myapp.jobs.report", True),
        ("reports.", "reports.daily.run", True),
        ("reports.", "reportsx.run", False),
        ("myapp.jobs,reports.", "reports.x", True),
        (" myapp , reports ", "reports.x", True),
        ("myapp", "os.system", False),
        ("myapp", "builtins.eval", False),
        ("myapp", "subprocess.run", False),
        ("os", "os.system", True),
        ("a,,b,", "b.c", True),
        ("myapp", "myapp.__builtins__.eval", False),
        ("myapp", "myapp.__import__", False),
        ("myapp", "myapp.jobs.Job.__init__", False),
        ("myapp", "myapp._impl.job", False),
        ("myapp", "myapp.jobs.Job._run", False),
        ("myapp._impl", "myapp._impl.job", True),
        ("myapp,myapp._impl", "myapp._impl.job", True),
    ],
)
def test_matching_by_whole_segments(prefixes: str, target: str, permitted: bool) -> None:
    assert allow(prefixes).permits(target) is permitted


def test_unset_or_blank_means_no_list() -> None:
    assert AllowList.parse(None) is None
    assert AllowList.parse("") is None
    assert AllowList.parse("  ") is None


@pytest.mark.parametrize("text", ["my-app", "1abc", "a..b", ".a", "a b", "os.system()", ",", " , ", "ü.x"])
def test_bad_prefixes_are_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        AllowList.parse(text, setting="--allow")
    assert str(info.value).startswith("--allow: ")
    assert len(str(info.value).splitlines()) == 1


def test_check_names_the_target_field() -> None:
    with pytest.raises(InvalidSchedule) as info:
        allow("myapp").check("os.system")
    assert info.value.field == "target"
    assert "allow-list (myapp)" in str(info.value)
    allow("myapp").check("myapp.run")


@PROFILE
@given(nasty_text)
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        AllowList.parse(text)
    except ConfigError as exc:
        assert len(str(exc).splitlines()) == 1


@PROFILE
@given(st.lists(st.from_regex(r"[a-z]{1,4}", fullmatch=True), min_size=1, max_size=4), st.text(max_size=4))
def test_a_prefix_never_permits_a_longer_sibling(segments: list[str], suffix: str) -> None:
    prefix = ".".join(segments)
    permitted = allow(prefix)
    assert permitted.permits(f"{prefix}.f")
    if suffix and not suffix.startswith("."):  # a dot starts a segment under the prefix
        assert not permitted.permits(f"{prefix}{suffix}.f")


def row(**changes: Any) -> list[Any]:
    schedule = Schedule.from_dict({"id": "s", "target": "os.system", "every": "1s", **changes})
    head = [schedule.to_json().encode(), b"1", b"due", iso(NOW_MS).encode(), b"1", None]
    return head + [None] * (len(DUE_FIELDS) - len(head))


def test_dispatch_marks_a_target_outside_the_list_broken() -> None:
    decision = decide("s", row(), NOW_MS, NOW_MS, allow("myapp"))
    assert decision.kind == "broken"
    assert "'os.system' is not in this replica's allow-list (myapp)" in decision.error
    assert decide("s", row(target="myapp.x"), NOW_MS, NOW_MS, allow("myapp")).kind == "run"
    assert decide("s", row(), NOW_MS, NOW_MS, None).kind == "run"
