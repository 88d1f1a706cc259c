"""Schedule validation, durations and the pure policy math (no Redis, no clock)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler import cron, policy
from scheduler.durations import format_duration, parse_duration_ms
from scheduler.errors import InvalidSchedule, RqbeatError
from scheduler.model import MAX_PAYLOAD_BYTES, Misfire, Schedule

#: A whole second far from any epoch edge: interval fires land on whole seconds.
NOW_MS = 1_800_000_000_000

BASE: dict[str, Any] = {"id": "job-1", "target": "app.jobs.run", "every": "1h"}


def build(**changes: Any) -> Schedule:
    """``Schedule.from_dict`` of a valid base with ``changes`` applied (None deletes)."""
    raw = {**BASE, **changes}
    return Schedule.from_dict({k: v for k, v in raw.items() if v is not None})


def refused_field(**changes: Any) -> str:
    with pytest.raises(InvalidSchedule) as info:
        build(**changes)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, RqbeatError)
    assert info.value.field in str(info.value)
    assert "\n" not in str(info.value)
    return info.value.field


# -- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule_id",
    ["", "x" * 101, "has space", "ünïcode", "a/b", "a:b", "a.b", "tab\t", "new\nline"],
)
def test_bad_id(schedule_id: str) -> None:
    assert refused_field(id=schedule_id) == "id"


def test_id_limits_accepted() -> None:
    assert build(id="x" * 100).id == "x" * 100
    assert build(id="A-z_0").id == "A-z_0"


@pytest.mark.parametrize("target", ["nodot", "os.", ".os", "1a.b", "a.1b", "a..b", "a.b c", "", "a.b-c"])
def test_bad_target(target: str) -> None:
    assert refused_field(target=target) == "target"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"args": "[1, 2"}, "args"),
        ({"args": "not json"}, "args"),
        ({"kwargs": "{'a': 1}"}, "kwargs"),
        ({"kwargs": "{"}, "kwargs"),
        ({"args": '{"a": 1}'}, "args"),
        ({"args": 5}, "args"),
        ({"args": {"a": 1}}, "args"),
        ({"kwargs": "[1]"}, "kwargs"),
        ({"kwargs": 3}, "kwargs"),
        ({"args": "[NaN]"}, "args"),
    ],
)
def test_bad_args_and_kwargs(changes: dict[str, Any], field: str) -> None:
    assert refused_field(**changes) == field


def test_kwargs_with_non_string_keys() -> None:
    with pytest.raises(InvalidSchedule) as info:
        Schedule(id="a", target="m.f", every_ms=1000, kwargs={1: "x"})  # type: ignore[dict-item]
    assert info.value.field == "kwargs"


def test_args_must_be_a_sequence_in_python() -> None:
    with pytest.raises(InvalidSchedule) as info:
        Schedule(id="a", target="m.f", every_ms=1000, args="abc")  # type: ignore[arg-type]
    assert info.value.field == "args"


def test_args_not_json_serialisable() -> None:
    with pytest.raises(InvalidSchedule) as info:
        Schedule(id="a", target="m.f", every_ms=1000, args=(object(),))
    assert info.value.field == "args"
    with pytest.raises(InvalidSchedule) as info:
        Schedule(id="a", target="m.f", every_ms=1000, kwargs={"x": float("inf")})
    assert info.value.field == "kwargs"


def test_payload_limit() -> None:
    # '["xxx..."]' is the string plus 4 bytes of JSON punctuation
    at_limit = "x" * (MAX_PAYLOAD_BYTES - 4)
    assert len(build(args=[at_limit]).args[0]) == MAX_PAYLOAD_BYTES - 4
    assert refused_field(args=["x" * (MAX_PAYLOAD_BYTES - 3)]) == "args"
    assert refused_field(args=json.dumps(["x" * MAX_PAYLOAD_BYTES])) == "args"
    assert refused_field(kwargs={"k": "x" * MAX_PAYLOAD_BYTES}) == "kwargs"
    # multi-byte characters count as bytes, not characters
    assert refused_field(args=["é" * (MAX_PAYLOAD_BYTES // 2)]) == "args"


def test_payload_limit_error_does_not_echo_the_payload() -> None:
    with pytest.raises(InvalidSchedule) as info:
        build(args=["x" * (2 * MAX_PAYLOAD_BYTES)])
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("field", ["args", "kwargs"])
def test_deeply_nested_json_text(field: str) -> None:
    opener, closer = ("[", "]") if field == "args" else ('{"a":', "}")
    text = opener * 100_000 + closer * 100_000
    assert refused_field(**{field: text}) == field


def test_deeply_nested_python_value() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    assert refused_field(args=[value]) == "args"


@pytest.mark.parametrize(
    "changes",
    [
        {"cron": "* * * * *"},  # both (the base has every)
        {"every": None},  # neither
        {"every": None, "cron": None},
    ],
)
def test_exactly_one_trigger(changes: dict[str, Any]) -> None:
    assert refused_field(**changes) == "cron"


@pytest.mark.parametrize("every", ["500ms", "999ms", 0.5, "0.9s"])
def test_every_below_one_second(every: Any) -> None:
    assert refused_field(every=every) == "every"


def test_every_of_one_second_accepted() -> None:
    assert build(every="1s").every_ms == 1000
    assert build(every=1).every_ms == 1000


@pytest.mark.parametrize("name", ["every", "timeout", "ttl", "result_ttl", "failure_ttl", "catchup_window"])
@pytest.mark.parametrize("value", [0, -1, "0", "-5s", "0s", -0.5, "0ms"])
def test_durations_must_be_positive(name: str, value: Any) -> None:
    assert refused_field(**{name: value}) == name


def test_jitter_may_be_zero_but_not_negative() -> None:
    assert build(jitter=0).jitter_ms == 0
    assert build(jitter="10s").jitter_ms == 10_000
    assert refused_field(jitter=-1) == "jitter"
    assert refused_field(jitter="-1s") == "jitter"


@pytest.mark.parametrize("name", ["timeout_ms", "ttl_ms", "every_ms", "jitter_ms", "catchup_window_ms"])
@pytest.mark.parametrize("value", [-1, True, 1.5, "10"])
def test_python_durations_checked(name: str, value: Any) -> None:
    values: dict[str, Any] = {"id": "a", "target": "m.f", "every_ms": 60_000, name: value}
    with pytest.raises(InvalidSchedule) as info:
        Schedule(**values)
    assert info.value.field == name.removesuffix("_ms")


@pytest.mark.parametrize("misfire", ["sometimes", "COALESCE", "", 1])
def test_unknown_misfire(misfire: Any) -> None:
    assert refused_field(misfire=misfire) == "misfire"


def test_misfire_accepts_every_policy() -> None:
    for value in Misfire:
        assert build(misfire=value.value).misfire is value


def test_unknown_key_in_from_dict() -> None:
    assert refused_field(crn="* * * * *") == "crn"
    assert refused_field(every_ms=1000) == "every_ms"


@pytest.mark.parametrize("missing", ["id", "target"])
def test_required_keys(missing: str) -> None:
    assert refused_field(**{missing: None}) == missing


def test_from_dict_refuses_non_mapping() -> None:
    with pytest.raises(InvalidSchedule) as info:
        Schedule.from_dict(["id", "x"])  # type: ignore[arg-type]
    assert info.value.field == "schedule"


@pytest.mark.parametrize("value", [0, -1, "-1", True, False, "x", 1.5, "1.0", 1001])
def test_bad_max_attempts(value: Any) -> None:
    assert refused_field(max_attempts=value) == "max_attempts"


def test_max_attempts_accepted() -> None:
    assert build(max_attempts=3).max_attempts == 3
    assert build(max_attempts="5").max_attempts == 5


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "utc+1", "../../etc/passwd", "Europe/"])
def test_bad_timezone(tz: str) -> None:
    assert refused_field(timezone=tz) == "timezone"


def test_timezone_checked_for_interval_schedules_too() -> None:
    assert refused_field(every="1m", timezone="Nowhere/Land") == "timezone"


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * * * *",  # 7 fields
        "* * * *",  # 4 fields
        "61 * * * *",
        "* 25 * * *",
        "not a cron",
        "",
        "@sometimes",
    ],
)
def test_bad_cron(expr: str) -> None:
    assert refused_field(every=None, cron=expr) == "cron"


@pytest.mark.parametrize("description", ["line\nbreak", "tab\there", "nul\x00", "bell\x07", "x" * 501])
def test_bad_description(description: str) -> None:
    assert refused_field(description=description) == "description"


def test_description_accepts_unicode() -> None:
    assert build(description="Bericht über Nacht ✓").description == "Bericht über Nacht ✓"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"queue": "has space"}, "queue"),
        ({"queue": ""}, "queue"),
        ({"owner": "someone"}, "owner"),
        ({"owner": "apply:"}, "owner"),
        ({"pause_on_failure": "maybe"}, "pause_on_failure"),
        ({"pause_on_failure": 2}, "pause_on_failure"),
        ({"target": 5}, "target"),
        ({"id": 5}, "id"),
        ({"timezone": 1}, "timezone"),
        ({"description": 5}, "description"),
        ({"every": True}, "every"),
        ({"every": None, "cron": 5}, "cron"),
    ],
)
def test_other_fields(changes: dict[str, Any], field: str) -> None:
    assert refused_field(**changes) == field


def test_error_carries_field_value_and_reason() -> None:
    with pytest.raises(InvalidSchedule) as info:
        build(every="10y")
    error = info.value
    assert (error.field, error.value) == ("every", "10y")
    assert error.reason
    assert str(error).startswith("every: ")
    assert "'10y'" in str(error)


# -- round trip ---------------------------------------------------------------------


FULL: dict[str, Any] = {
    "id": "nightly_report-1",
    "target": "app.jobs.report",
    "args": [1, "a", None, {"b": [True, 2.5]}],
    "kwargs": {"region": "eu", "n": 3},
    "cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "queue": "reports",
    "timeout": "10m",
    "ttl": "1h30m",
    "result_ttl": "1d",
    "failure_ttl": "7d",
    "description": "Nightly report ✓",
    "misfire": "all",
    "catchup_window": "2h",
    "jitter": "1m30s500ms",
    "max_attempts": 5,
    "pause_on_failure": True,
}


@pytest.mark.parametrize(
    "raw",
    [
        FULL,
        BASE,
        {"id": "a", "target": "m.f", "every": "1.5s"},
        {"id": "b", "target": "m.f", "cron": "0 */2 * * * *", "owner": "apply:ops"},
        {"id": "c", "target": "m.f", "cron": "@hourly", "misfire": "skip", "jitter": 0},
    ],
)
def test_round_trip(raw: dict[str, Any]) -> None:
    schedule = Schedule.from_dict(raw)
    again = Schedule.from_dict(schedule.to_dict())
    assert again == schedule
    assert again.to_json() == schedule.to_json()
    assert Schedule.from_dict({**json.loads(schedule.to_json()), "id": schedule.id}) == schedule
    # stable text: key-sorted, compact
    assert schedule.to_json() == json.dumps(
        json.loads(schedule.to_json()), sort_keys=True, separators=(",", ":")
    )


def test_to_dict_is_user_facing() -> None:
    data = Schedule.from_dict(FULL).to_dict()
    assert data["timeout"] == "10m"
    assert data["ttl"] == "1h30m"
    assert data["jitter"] == "1m30s500ms"
    assert data["misfire"] == "all"
    assert data["args"] == FULL["args"]
    assert data["owner"] == "api"
    assert not any(key.endswith("_ms") for key in data)
    minimal = build().to_dict()
    assert "args" not in minimal
    assert "kwargs" not in minimal
    assert "jitter" not in minimal


def test_python_constructor_coerces_lists_and_strings() -> None:
    schedule = Schedule(id="a", target="m.f", every_ms=1000, args=[1, 2], misfire="skip")  # type: ignore[arg-type]
    assert schedule.args == (1, 2)
    assert schedule.misfire is Misfire.SKIP


def test_owner_argument_overrides() -> None:
    assert Schedule.from_dict(BASE, owner="cli").owner == "cli"
    assert build().owner == "api"


def test_trigger_text() -> None:
    assert build(every="90s").trigger_text == "every 1m30s"
    assert build(every=None, cron="30 2 * * *").trigger_text == "30 2 * * *"


# -- durations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (90, 90_000),
        ("90", 90_000),
        (1.5, 1_500),
        ("30s", 30_000),
        ("10m", 600_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("500ms", 500),
        ("1m30s500ms", 90_500),
        (" 2H ", 7_200_000),
        ("1h 30m", 5_400_000),
        ("0.5s", 500),
    ],
)
def test_parse_duration(value: object, ms: int) -> None:
    assert parse_duration_ms("every", value) == ms


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        "-5s",
        "abc",
        "nan",
        "inf",
        "-inf",
        True,
        False,
        None,
        "10y",
        "",
        "5 s x",
        [5],
        float("nan"),
        "11000d",
    ],
)
def test_parse_duration_invalid(value: object) -> None:
    with pytest.raises(InvalidSchedule) as info:
        parse_duration_ms("timeout", value)
    assert info.value.field == "timeout"


def test_parse_duration_zero_when_allowed() -> None:
    assert parse_duration_ms("jitter", 0, allow_zero=True) == 0
    assert parse_duration_ms("jitter", "0s", allow_zero=True) == 0
    with pytest.raises(InvalidSchedule):
        parse_duration_ms("jitter", -1, allow_zero=True)


@pytest.mark.parametrize("ms", [1, 999, 1_000, 90_000, 90_500, 86_400_000, 97_445_123])
def test_format_duration_inverts_parse(ms: int) -> None:
    assert parse_duration_ms("x", format_duration(ms)) == ms


# -- policy: misfires ---------------------------------------------------------------


def every_second(**changes: Any) -> Schedule:
    return Schedule.from_dict({"id": "tick", "target": "m.f", "every": "1s", **changes})


def test_interval_trigger_fires_on_whole_seconds() -> None:
    schedule = every_second()
    assert isinstance(schedule.trigger, cron.IntervalTrigger)
    assert cron.next_fire_ms(schedule.trigger, NOW_MS - 1) == NOW_MS
    assert cron.next_fire_ms(schedule.trigger, NOW_MS) == NOW_MS + 1000


#: A pending fire on the 1s grid, 5s (less 1ms) before "now": fires at +0s..+4s were missed.
PENDING_MS = NOW_MS - 5_000
LATE_MS = NOW_MS - 1


def test_misfire_coalesce() -> None:
    result = policy.resolve_misfire(every_second(misfire="coalesce"), PENDING_MS, LATE_MS)
    assert result == policy.Resolution(fire_ms=NOW_MS - 1_000, dropped=4, run_now=True)


def test_misfire_all() -> None:
    result = policy.resolve_misfire(every_second(misfire="all"), PENDING_MS, LATE_MS)
    assert result == policy.Resolution(fire_ms=PENDING_MS, dropped=0, run_now=True)


def test_misfire_skip() -> None:
    result = policy.resolve_misfire(every_second(misfire="skip"), PENDING_MS, LATE_MS)
    assert result == policy.Resolution(fire_ms=NOW_MS, dropped=5, run_now=False)


def test_misfire_counts_a_fire_at_now_as_missed() -> None:
    # fires in (pending, now] are enumerated: now itself is the newest missed fire
    result = policy.resolve_misfire(every_second(misfire="coalesce"), PENDING_MS, NOW_MS)
    assert result == policy.Resolution(fire_ms=NOW_MS, dropped=5, run_now=True)
    skipped = policy.resolve_misfire(every_second(misfire="skip"), PENDING_MS, NOW_MS)
    assert skipped == policy.Resolution(fire_ms=NOW_MS + 1_000, dropped=6, run_now=False)


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [
        # missed fires at -5s..-1s; a 2s window keeps the ones at -2s and -1s
        ("coalesce", policy.Resolution(NOW_MS - 1_000, 4, True)),
        ("all", policy.Resolution(NOW_MS - 2_000, 3, True)),
        ("skip", policy.Resolution(NOW_MS, 5, False)),
    ],
)
def test_misfire_catchup_window(misfire: str, expected: policy.Resolution) -> None:
    schedule = every_second(misfire=misfire, catchup_window="2s")
    assert policy.resolve_misfire(schedule, PENDING_MS, LATE_MS) == expected


@pytest.mark.parametrize("misfire", ["coalesce", "all"])
def test_catchup_window_dropping_everything_waits_for_the_next_fire(misfire: str) -> None:
    raw = {"id": "h", "target": "m.f", "every": "1h", "catchup_window": "1m", "misfire": misfire}
    schedule = Schedule.from_dict(raw)
    # fires at -1h and 0 were missed; now is 2 minutes past the newer one
    result = policy.resolve_misfire(schedule, NOW_MS - 3_600_000, NOW_MS + 120_000)
    assert result == policy.Resolution(NOW_MS + 3_600_000, 2, False)


@pytest.mark.parametrize("misfire", ["coalesce", "all", "skip"])
@pytest.mark.parametrize("late_ms", [0, 1, 500, policy.MISFIRE_GRACE_MS - 1])
def test_fire_within_grace_is_untouched(misfire: str, late_ms: int) -> None:
    schedule = every_second(misfire=misfire, catchup_window="1s")
    pending = NOW_MS - late_ms
    assert policy.resolve_misfire(schedule, pending, NOW_MS) == policy.Resolution(pending, 0, True)


def test_future_fire_is_not_run_now() -> None:
    schedule = every_second(misfire="skip")
    assert policy.resolve_misfire(schedule, NOW_MS + 3_000, NOW_MS) == policy.Resolution(
        NOW_MS + 3_000, 0, False
    )


def test_long_outage_counts_are_bounded() -> None:
    schedule = every_second(misfire="coalesce")
    result = policy.resolve_misfire(schedule, NOW_MS - 10_000_000, NOW_MS)
    assert result.run_now is True
    assert 0 < result.dropped < policy.MAX_ENUMERATED_FIRES


# -- policy: jitter -----------------------------------------------------------------


def test_due_score_without_jitter_is_the_fire() -> None:
    assert policy.due_score_ms(every_second(), NOW_MS) == NOW_MS


@pytest.mark.parametrize(("every", "jitter"), [("1m", "30s"), ("1m", "5m"), ("1s", "10s"), ("1h", "1ms")])
def test_due_score_jitter_stays_before_the_next_fire(every: str, jitter: str) -> None:
    schedule = Schedule.from_dict({"id": "j", "target": "m.f", "every": every, "jitter": jitter})
    fire = cron.next_fire_ms(schedule.trigger, NOW_MS)
    following = cron.next_fire_ms(schedule.trigger, fire)
    scores = []
    for _ in range(50):
        score = policy.due_score_ms(schedule, fire)
        assert fire <= score < following
        assert score - fire <= schedule.jitter_ms
        assert policy.due_score_ms(schedule, fire) == score  # deterministic
        scores.append(score - fire)
        fire, following = following, cron.next_fire_ms(schedule.trigger, following)
    if schedule.jitter_ms > 1:
        assert len(set(scores)) > 1  # it does spread


def test_due_score_depends_on_schedule_id() -> None:
    raw = {"target": "m.f", "every": "1h", "jitter": "30m"}
    scores = {policy.due_score_ms(Schedule.from_dict({**raw, "id": f"s{i}"}), NOW_MS) for i in range(20)}
    assert len(scores) > 1


# -- policy: retries ----------------------------------------------------------------


def test_backoff_grows_and_is_capped() -> None:
    ceilings = [min(policy.RETRY_CAP_MS, policy.RETRY_BASE_MS * 2 ** (a - 1)) for a in range(1, 40)]
    delays = [policy.backoff_ms("s", NOW_MS, attempt) for attempt in range(1, 40)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling // 2 <= delay <= ceiling
        assert delay <= policy.RETRY_CAP_MS
    assert delays[0] <= policy.RETRY_BASE_MS
    assert delays[-1] >= policy.RETRY_CAP_MS // 2
    # averaged over schedules, each attempt waits longer until the cap
    means = [sum(policy.backoff_ms(f"s{i}", NOW_MS, a) for i in range(50)) / 50 for a in range(1, 10)]
    assert means == sorted(means)
    assert policy.backoff_ms("s", NOW_MS, 10_000) <= policy.RETRY_CAP_MS


def test_backoff_is_deterministic_and_spread() -> None:
    assert policy.backoff_ms("s", NOW_MS, 3) == policy.backoff_ms("s", NOW_MS, 3)
    assert len({policy.backoff_ms(f"s{i}", NOW_MS, 5) for i in range(20)}) > 1


def test_gives_up() -> None:
    assert not policy.gives_up(build(), 1)
    assert not policy.gives_up(build(), 10_000)
    limited = build(max_attempts=3)
    assert not policy.gives_up(limited, 1)
    assert not policy.gives_up(limited, 2)
    assert policy.gives_up(limited, 3)
    assert policy.gives_up(limited, 4)
    assert policy.gives_up(build(max_attempts=1), 1)
