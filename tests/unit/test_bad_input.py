"""Bad input over the Python API and the TOML loader, driven by hypothesis.

The contract (README, "Nothing lost on bad input"): whatever a caller passes, the
answer is a valid :class:`Schedule` or one :class:`InvalidSchedule` whose message is a
single line naming the field; never another exception. Valid input round-trips
through the stored JSON unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scheduler import apply as applying
from scheduler.durations import parse_duration_ms
from scheduler.errors import InvalidSchedule, RqbeatError
from scheduler.model import Schedule
from scheduler.records import decode_definition
from tests.badinput import (
    PROFILE,
    USER_SETTINGS,
    any_raw,
    junk,
    nasty_text,
    nested,
    toml_document,
    toml_value,
    valid_raw,
)

BASE: dict[str, Any] = {"id": "job-1", "target": "app.jobs.run", "every": "1h"}


def assert_clean(exc: InvalidSchedule) -> None:
    """One line, naming the field; an RqbeatError and a ValueError."""
    message = str(exc)
    assert isinstance(exc, RqbeatError) and isinstance(exc, ValueError)
    assert len(message.splitlines()) == 1, repr(message)
    assert message.isprintable(), repr(message)
    if exc.field.isprintable():  # long fields are clipped
        assert message.startswith(exc.field[:100]), repr(message)
    assert len(message) < 2000


def build_or_error(raw: Any) -> Schedule | None:
    try:
        return Schedule.from_dict(raw)
    except InvalidSchedule as exc:
        assert_clean(exc)
        return None


def assert_round_trip(schedule: Schedule) -> None:
    stored = schedule.to_json()
    again = decode_definition(schedule.id, stored)
    assert again == schedule
    assert again.to_json() == stored
    assert Schedule.from_dict(schedule.to_dict(), owner=schedule.owner) == schedule


@PROFILE
@given(valid_raw())
def test_valid_input_is_accepted_and_round_trips(raw: dict[str, Any]) -> None:
    schedule = Schedule.from_dict(raw)
    assert_round_trip(schedule)


@PROFILE
@given(any_raw())
@example({**BASE, "max_attempts": "²"})  # str.isdigit() is True, int() refuses it
@example({**BASE, "every": 10**400})  # too large for a float
@example({**BASE, "timeout": -(10**400)})
@example({**BASE, "description": "\ud800"})
@example({**BASE, "every": None, "cron": "99999999999999999999 * * * *"})
@example({**BASE, "every": None, "cron": "* * * * * * * *"})
@example({**BASE, "every": None, "cron": "\x00 * * * *"})
@example({**BASE, "timezone": "../../../etc/passwd"})
@example({**BASE, "timezone": "x" * 5000})
@example({**BASE, "timezone": "Europe/Berlin\x00"})
@example({**BASE, "new\nline\x1b[31m": 1})
def test_any_input_is_a_schedule_or_one_clean_error(raw: dict[str, Any]) -> None:
    schedule = build_or_error({k: v for k, v in raw.items() if v is not None})
    if schedule is not None:
        assert_round_trip(schedule)


@pytest.mark.parametrize(
    "changes",
    [
        {"args": nested(5000)},
        {"kwargs": {"k": nested(5000)}},
        {"args": "[" * 100_000},
        {"kwargs": "{" * 100_000},
        {"description": nested(5000)},
        {"every": 10**5000},
        {"max_attempts": 10**5000},
        {"max_attempts": "9" * 5000},
        {"args": ["x" * (64 * 1024)]},
    ],
)
def test_deep_and_huge_values(changes: dict[str, Any]) -> None:
    assert build_or_error({**BASE, **changes}) is None


@PROFILE
@given(st.sampled_from(USER_SETTINGS), junk)
def test_junk_in_one_setting_names_a_field(key: str, value: Any) -> None:
    try:
        Schedule.from_dict({**BASE, key: value})
    except InvalidSchedule as exc:
        assert_clean(exc)


@PROFILE
@given(junk)
def test_junk_instead_of_a_table(value: Any) -> None:
    build_or_error(value)


@PROFILE
@given(junk)
@example(10**400)
@example("9" * 400)
@example(float("nan"))
def test_durations_parse_or_refuse(value: Any) -> None:
    try:
        ms = parse_duration_ms("every", value)
    except InvalidSchedule as exc:
        assert_clean(exc)
        assert exc.field == "every"
    else:
        assert isinstance(ms, int) and ms > 0


# -- TOML ---------------------------------------------------------------------------


def load(path: Path, text: str) -> list[Schedule] | None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        return applying.load_file(path, group="g")
    except InvalidSchedule as exc:
        assert_clean(exc)
        return None


@PROFILE
@given(st.lists(valid_raw(), max_size=4, unique_by=lambda r: str(r["id"])))
def test_valid_toml_round_trips(tmp_path: Path, raws: list[dict[str, Any]]) -> None:
    text = toml_document({r["id"]: r for r in raws})
    schedules = load(tmp_path / "s.toml", text)
    assert schedules is not None, text
    assert schedules == [Schedule.from_dict(r, owner="apply:g") for r in raws]
    for schedule in schedules:
        assert_round_trip(schedule)


@PROFILE
@given(
    st.dictionaries(nasty_text, any_raw(), max_size=3),
    st.none() | st.dictionaries(st.sampled_from([*USER_SETTINGS, "owner"]), junk, max_size=3),
)
def test_random_toml_values_load_or_refuse(
    tmp_path: Path, schedules: dict[str, dict[str, Any]], defaults: dict[str, Any] | None
) -> None:
    try:
        text = toml_document(schedules, defaults)
    except RecursionError:
        return  # the test's own writer; such input is covered by test_deep_nesting
    load(tmp_path / "s.toml", text)


@PROFILE
@given(st.text(max_size=300), st.integers(0, 400), st.text(max_size=5))
def test_malformed_toml_text_is_refused_cleanly(tmp_path: Path, noise: str, at: int, insert: str) -> None:
    valid = toml_document({"a": {**BASE, "id": "a"}, "b": {"target": "x.y", "cron": "* * * * *"}})
    load(tmp_path / "s.toml", noise)
    load(tmp_path / "m.toml", valid[:at] + insert + valid[at:])


@pytest.mark.parametrize(
    "text",
    [
        "[schedules.a]\ntarget = 'a.b'\nevery = '1s'\nargs = " + "[" * 5000 + "]" * 5000,
        "[schedules.a]\ntarget = 'a.b'\nevery = '1s'\nkwargs = " + "{a = " * 2000 + "1" + "}" * 2000,
        "[" + ".".join(["t"] * 5000) + "]\n",
        "[schedules.a]\n" + "target = 'a.b'\nevery = '1s'\ndescription = '" + "x" * 2_000_000 + "'",
        "[schedules.a]\ntarget = 'a.b'\nevery = " + "9" * 5000,
        "[schedules.a]\ntarget = 'a.b'\nevery = 1e999",
        "[schedules.a]\ntarget = 'a.b'\nevery = nan",
        "[schedules.a]\ntarget = 'a.b'\nevery = '1s'\nmax_attempts = 99999999999999999999999",
        "[schedules.\"a\\nb\"]\ntarget = 'a.b'\nevery = '1s'",
        "[schedules.\"a\\u001b[2J\"]\ntarget = 'a.b'\nevery = '1s'",
        "[schedules.a]\ntarget = 'a.b'\nevery = '1s'\n\"bad\\nkey\" = 1",
        '[defaults]\n"x\\u0000" = 1\n',
        "[schedules.a]\ntarget = 'a.b'\nevery = 1979-05-27T07:32:00Z",
        "schedules = 5",
        "[schedules]\na = 5",
    ],
)
def test_deep_nesting_huge_and_odd_values(tmp_path: Path, text: str) -> None:
    assert load(tmp_path / "s.toml", text) is None


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b"\xff\xfe[schedules.a]\x00")
    with pytest.raises(InvalidSchedule) as info:
        applying.load_file(path, group="g")
    assert_clean(info.value)


@PROFILE
@given(junk)
def test_any_toml_value_in_any_setting(tmp_path: Path, value: Any) -> None:
    """The same values through the TOML writer/reader, so the loader sees TOML types."""
    for key in ("every", "args", "kwargs", "max_attempts", "description", "misfire"):
        try:
            text = f"[schedules.a]\ntarget = 'a.b'\ncron = '* * * * *'\n{key} = {toml_value(value)}\n"
        except RecursionError:
            return
        load(tmp_path / f"{key}.toml", text)


def test_json_definition_with_junk_is_refused() -> None:
    for definition in ("", "[]", "null", '{"id": "x"}', json.dumps({**BASE, "every": "0s"}), "{" * 100_000):
        with pytest.raises((RqbeatError, ValueError)):
            decode_definition("job-1", definition)
