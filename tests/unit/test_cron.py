"""Cron and interval triggers: syntax, H, DST rules, and properties against brute force."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.cron import (
    CronTrigger,
    IntervalTrigger,
    cron_trigger,
    datetime_to_ms,
    describe,
    fires_between,
    interval_trigger,
    load_zone,
    ms_to_datetime,
    next_fire_ms,
    next_fires,
)
from scheduler.errors import InvalidSchedule

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def ms(text: str) -> int:
    return datetime_to_ms(datetime.fromisoformat(text))


def iso(fire_ms: int) -> str:
    return ms_to_datetime(fire_ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def isos(fires: list[int]) -> list[str]:
    return [iso(fire) for fire in fires]


# The 2027 transitions, as UTC instants (checked against zoneinfo below).
TRANSITIONS = [
    ("Europe/Berlin", "2027-03-28T01:00:00Z"),  # 02:00 CET -> 03:00 CEST
    ("Europe/Berlin", "2027-10-31T01:00:00Z"),  # 03:00 CEST -> 02:00 CET
    ("America/New_York", "2027-03-14T07:00:00Z"),  # 02:00 EST -> 03:00 EDT
    ("America/New_York", "2027-11-07T06:00:00Z"),  # 02:00 EDT -> 01:00 EST
    ("Australia/Lord_Howe", "2027-04-03T15:00:00Z"),  # 02:00 +11 -> 01:30 +10:30
    ("Australia/Lord_Howe", "2027-10-02T15:30:00Z"),  # 02:00 +10:30 -> 02:30 +11
]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]


@pytest.mark.parametrize(("tz", "transition"), TRANSITIONS)
def test_transition_table_matches_zoneinfo(tz: str, transition: str) -> None:
    at_s = ms(transition) // SECOND
    zone = ZoneInfo(tz)
    before = datetime.fromtimestamp(at_s - 1, zone).utcoffset()
    assert before != datetime.fromtimestamp(at_s, zone).utcoffset()


# -- DST -------------------------------------------------------------------------

DAILY_AROUND_TRANSITIONS = [
    # zone, expression, after, next three fires; the middle one is on the transition day
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2027-03-27T00:00:00Z",
        ["2027-03-27T01:30:00Z", "2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"],
    ),
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2027-10-30T00:00:00Z",
        ["2027-10-30T00:30:00Z", "2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"],
    ),
    (
        "America/New_York",
        "30 2 * * *",
        "2027-03-13T12:00:00Z",
        ["2027-03-14T07:00:00Z", "2027-03-15T06:30:00Z", "2027-03-16T06:30:00Z"],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2027-11-06T12:00:00Z",
        ["2027-11-07T05:30:00Z", "2027-11-08T06:30:00Z", "2027-11-09T06:30:00Z"],
    ),
    (  # gap 02:00-02:30 local: 02:15 fires at 02:30 +11
        "Australia/Lord_Howe",
        "15 2 * * *",
        "2027-10-02T00:00:00Z",
        ["2027-10-02T15:30:00Z", "2027-10-03T15:15:00Z", "2027-10-04T15:15:00Z"],
    ),
    (  # fold 01:30-02:00 local: 01:45 fires in the first pass (+11) only
        "Australia/Lord_Howe",
        "45 1 * * *",
        "2027-04-03T00:00:00Z",
        ["2027-04-03T14:45:00Z", "2027-04-04T15:15:00Z", "2027-04-05T15:15:00Z"],
    ),
]


@pytest.mark.parametrize(("tz", "expr", "after", "expected"), DAILY_AROUND_TRANSITIONS)
def test_daily_job_fires_once_on_transition_days(tz: str, expr: str, after: str, expected: list[str]) -> None:
    trigger = cron_trigger(expr, tz)
    assert isos(next_fires(trigger, ms(after), 3)) == expected
    transition_day = ms_to_datetime(ms(expected[0]), tz).date()
    fires = fires_between(trigger, ms(after) - 2 * DAY, ms(after) + 3 * DAY, 100)
    assert [ms_to_datetime(f, tz).date() for f in fires].count(transition_day) == 1


@pytest.mark.parametrize(("tz", "transition"), TRANSITIONS)
def test_every_15_minutes_keeps_15_real_minutes(tz: str, transition: str) -> None:
    at = ms(transition)
    fires = fires_between(cron_trigger("*/15 * * * *", tz), at - 3 * HOUR, at + 3 * HOUR, 100)
    assert fires == list(range(at - 3 * HOUR + 15 * MINUTE, at + 3 * HOUR + 1, 15 * MINUTE))


@pytest.mark.parametrize(("tz", "transition"), TRANSITIONS[:4])
@pytest.mark.parametrize("expr", ["@hourly", "0 * * * *", "0 */1 * * *"])
def test_hourly_keeps_real_hours_in_whole_hour_zones(tz: str, transition: str, expr: str) -> None:
    at = ms(transition)
    fires = fires_between(cron_trigger(expr, tz), at - 3 * HOUR, at + 3 * HOUR, 100)
    assert fires == list(range(at - 2 * HOUR, at + 3 * HOUR + 1, HOUR))


def test_fixed_hour_fires_once_through_a_fold_whatever_after_is() -> None:
    trigger = cron_trigger("*/15 2 * * *", "Europe/Berlin")  # the fold is 02:00-03:00
    first_pass = ["2027-10-31T00:00:00Z", "2027-10-31T00:15:00Z", "2027-10-31T00:30:00Z"]
    first_pass += ["2027-10-31T00:45:00Z", "2027-11-01T01:00:00Z"]
    assert isos(next_fires(trigger, ms("2027-10-30T23:59:00Z"), 5)) == first_pass
    for after in ("2027-10-31T00:50:00Z", "2027-10-31T01:00:00Z", "2027-10-31T01:20:00Z"):
        assert iso(next_fire_ms(trigger, ms(after))) == "2027-11-01T01:00:00Z"


def test_second_pass_may_come_before_a_later_first_pass_wall_time() -> None:
    trigger = cron_trigger("*/15 * * * *", "Europe/Berlin")
    # 02:50 CEST: 03:00 wall is 02:00Z, but 02:00 CET (second pass) is 01:00Z
    assert iso(next_fire_ms(trigger, ms("2027-10-31T00:50:00Z"))) == "2027-10-31T01:00:00Z"
    # inside the second pass, from an instant with milliseconds
    assert iso(next_fire_ms(trigger, ms("2027-10-31T01:20:00.500Z"))) == "2027-10-31T01:30:00Z"


def test_gap_fires_collapse_into_one_instant() -> None:
    trigger = cron_trigger("*/10 2,3 * * *", "Europe/Berlin")  # 02:00-02:50 do not exist
    fires = fires_between(trigger, ms("2027-03-28T00:00:00Z"), ms("2027-03-28T01:30:00Z"), 100)
    expected = ["2027-03-28T01:00:00Z", "2027-03-28T01:10:00Z", "2027-03-28T01:20:00Z"]
    expected += ["2027-03-28T01:30:00Z"]  # until is inclusive
    assert isos(fires) == expected


def test_six_field_expressions_fire_at_seconds_in_a_gap() -> None:
    trigger = cron_trigger("30 59 1,2 * * *", "America/New_York")  # 02:59:30 is in the gap
    fires = next_fires(trigger, ms("2027-03-14T06:00:00Z"), 2)
    assert isos(fires) == ["2027-03-14T06:59:30Z", "2027-03-14T07:00:00Z"]


# -- syntax ----------------------------------------------------------------------


def test_six_fields_put_seconds_first() -> None:
    assert isos(next_fires(cron_trigger("*/20 * * * * *"), 0, 3)) == [
        "1970-01-01T00:00:20Z",
        "1970-01-01T00:00:40Z",
        "1970-01-01T00:01:00Z",
    ]
    daily = cron_trigger("30 15 10 * * *")  # 10:15:30, not 15:30 on the 10th
    assert iso(next_fire_ms(daily, ms("2027-01-01T00:00:00Z"))) == "2027-01-01T10:15:30Z"


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@yearly", "2028-01-01T00:00:00Z"),
        ("@annually", "2028-01-01T00:00:00Z"),
        ("@monthly", "2027-04-01T00:00:00Z"),
        ("@weekly", "2027-03-07T00:00:00Z"),
        ("@daily", "2027-03-02T00:00:00Z"),
        ("@midnight", "2027-03-02T00:00:00Z"),
        ("@hourly", "2027-03-01T01:00:00Z"),
        ("@DAILY", "2027-03-02T00:00:00Z"),
    ],
)
def test_aliases(alias: str, expected: str) -> None:
    trigger = cron_trigger(alias, schedule_id="aliases-are-never-hashed")
    assert iso(next_fire_ms(trigger, ms("2027-03-01T00:00:00Z"))) == expected


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 0 L * *", "2028-02-01T00:00:00Z", ["2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z"]),
        ("0 0 15W * *", "2027-05-01T00:00:00Z", ["2027-05-14T00:00:00Z", "2027-06-15T00:00:00Z"]),
        ("0 0 15W * *", "2027-08-01T00:00:00Z", ["2027-08-16T00:00:00Z", "2027-09-15T00:00:00Z"]),
        ("0 0 * * 5#3", "2027-01-01T00:00:00Z", ["2027-01-15T00:00:00Z", "2027-02-19T00:00:00Z"]),
        ("0 0 * * L5", "2027-01-01T00:00:00Z", ["2027-01-29T00:00:00Z", "2027-02-26T00:00:00Z"]),
        ("0 0 * * 5L", "2027-01-01T00:00:00Z", ["2027-01-29T00:00:00Z", "2027-02-26T00:00:00Z"]),
        ("0 9 * * mon-fri", "2027-03-05T12:00:00Z", ["2027-03-08T09:00:00Z", "2027-03-09T09:00:00Z"]),
        ("0 0 13 * 5", "2027-03-01T00:00:00Z", ["2027-03-05T00:00:00Z", "2027-03-12T00:00:00Z"]),
        # croniter alone reads an equal range as the whole field
        ("5-5 * * * *", "2027-03-01T00:00:00Z", ["2027-03-01T00:05:00Z", "2027-03-01T01:05:00Z"]),
        ("0-0/2 0 * * *", "2027-03-01T00:00:00Z", ["2027-03-02T00:00:00Z", "2027-03-03T00:00:00Z"]),
    ],
)
def test_special_characters(expr: str, after: str, expected: list[str]) -> None:
    assert isos(next_fires(cron_trigger(expr), ms(after), 2)) == expected


def minute_of(trigger: CronTrigger) -> int:
    return ms_to_datetime(next_fire_ms(trigger, 0)).minute


def test_h_is_stable_per_id_and_pinned() -> None:
    first = cron_trigger("H H * * *", "UTC", schedule_id="reports.daily")
    again = cron_trigger("H H * * *", "UTC", schedule_id="reports.daily")
    assert first == again
    assert next_fires(first, 0, 3) == next_fires(again, 0, 3)
    # crc32 of the id, never hash(): changing this moves every hashed schedule.
    assert describe(first) == "cron 'H H * * *' UTC (as '22 3 * * *')"
    assert describe(cron_trigger("H * * * *")) == "cron 'H * * * *' UTC (as '56 * * * *')"


def test_h_spreads_across_ids() -> None:
    minutes = {minute_of(cron_trigger("H * * * *", schedule_id=f"job-{i}")) for i in range(200)}
    assert len(minutes) > 45
    triggers = [cron_trigger("H H * * *", schedule_id=f"job-{i}") for i in range(50)]
    assert len(set(triggers)) > 45


@pytest.mark.parametrize("schedule_id", [f"id-{i}" for i in range(40)])
def test_h_ranges_and_steps_stay_in_bounds(schedule_id: str) -> None:
    def fires(expr: str, n: int) -> list[datetime]:
        trigger = cron_trigger(expr, schedule_id=schedule_id)
        return [ms_to_datetime(f) for f in next_fires(trigger, -1, n)]

    assert 10 <= fires("H(10-20) * * * *", 1)[0].minute <= 20
    steps = [d.minute for d in fires("H(0-29)/10 * * * *", 3)]
    assert steps[0] < 10
    assert steps == [steps[0], steps[0] + 10, steps[0] + 20]
    quarter = [d.minute for d in fires("H/15 * * * *", 4)]
    assert quarter[0] < 15
    assert quarter == [quarter[0] + 15 * k for k in range(4)]
    assert all(d.day <= 28 for d in fires("0 0 H * *", 12))
    assert len({d.month for d in fires("0 0 H * *", 12)}) == 12
    seconds = [d.second for d in fires("H/20 * * * * *", 3)]
    assert seconds == [seconds[0], seconds[0] + 20, seconds[0] + 40]
    assert 1 <= fires("0 0 * * H(1-5)", 1)[0].isoweekday() <= 5


def test_h_without_schedule_id_is_allowed() -> None:
    assert cron_trigger("H * * * *") == cron_trigger("H * * * *", schedule_id="")


# -- interval triggers --------------------------------------------------------------


def test_interval_fires_on_a_fixed_grid_whatever_after_is() -> None:
    trigger = interval_trigger(7 * SECOND)
    for after in range(1_800_000_000_000, 1_800_000_000_000 + 20 * SECOND, 333):
        fire = next_fire_ms(trigger, after)
        assert fire % (7 * SECOND) == 0
        assert after < fire <= after + 7 * SECOND
    start = 1_800_000_000_000
    assert fires_between(trigger, start, start + HOUR, 1000)[10:] == fires_between(
        trigger, next_fires(trigger, start, 10)[-1], start + HOUR, 1000
    )


def test_interval_origin_anchors_the_grid() -> None:
    trigger = interval_trigger(MINUTE, origin_ms=5 * SECOND)
    assert next_fires(trigger, 0, 3) == [5 * SECOND, 65 * SECOND, 125 * SECOND]
    assert next_fire_ms(trigger, 5 * SECOND) == 65 * SECOND
    assert next_fire_ms(trigger, -MINUTE) == -55 * SECOND


def test_limits_and_bounds() -> None:
    every_second = interval_trigger(SECOND)
    assert fires_between(every_second, 1000, 3000, 10) == [2000, 3000]  # (after, until]
    assert fires_between(every_second, 0, HOUR, 3) == [1000, 2000, 3000]
    assert fires_between(every_second, 0, HOUR, 0) == []
    assert fires_between(every_second, 5000, 1000, 10) == []
    assert next_fires(every_second, 0, 0) == []
    quarter = cron_trigger("*/15 * * * *")
    assert fires_between(quarter, 0, HOUR, 100) == [15 * MINUTE, 30 * MINUTE, 45 * MINUTE, HOUR]
    assert next_fires(quarter, 0, 2) == [15 * MINUTE, 30 * MINUTE]
    with pytest.raises(ValueError, match="limit"):
        fires_between(quarter, 0, HOUR, -1)
    with pytest.raises(ValueError, match="n must"):
        next_fires(quarter, 0, -1)


def test_describe() -> None:
    assert describe(cron_trigger("30 2 * * *", "Europe/Berlin")) == "cron '30 2 * * *' Europe/Berlin"
    assert describe(cron_trigger("@daily")) == "cron '@daily' UTC (as '0 0 * * *')"
    assert describe(interval_trigger(30 * SECOND)) == "every 30s"
    assert describe(interval_trigger(HOUR + 30 * MINUTE)) == "every 1h30m"
    assert describe(interval_trigger(1500)) == "every 1s500ms"
    assert describe(interval_trigger(DAY, ms("2026-01-01T06:00:00Z"))) == (
        "every 1d from 2026-01-01T06:00:00+00:00"
    )


def test_datetime_wrappers() -> None:
    moment = ms_to_datetime(ms("2027-10-31T00:30:00.250Z"), "Europe/Berlin")
    assert (moment.hour, moment.minute, moment.microsecond) == (2, 30, 250_000)
    assert moment.utcoffset() == timedelta(hours=2)
    assert datetime_to_ms(moment) == ms("2027-10-31T00:30:00.250Z")
    with pytest.raises(ValueError, match="naive"):
        datetime_to_ms(moment.replace(tzinfo=None))


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("garbage", "got 1"),
        ("* * * *", "expected 5 fields (or 6 with seconds first), got 4"),
        ("* * * * * * *", "expected 5 fields (or 6 with seconds first), got 7"),
        ("0 0 1 1 * 2027 *", "got 7"),
        ("61 * * * *", "minute value 61"),
        ("* 24 * * *", "hour value 24"),
        ("* * 0 * *", "day-of-month value 0"),
        ("* * * 13 *", "month value 13"),
        ("* * * * 8", "day-of-week value 8"),
        ("60 * * * * *", "second value 60"),
        ("*/0 * * * *", "step 0"),
        ("1-x * * * *", "not acceptable"),
        ("@reboot", "@reboot"),
        ("@fortnightly", "unknown alias"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6 *", "never fires"),
        ("R * * * *", "random"),
        ("H,5 * * * *", "whole minute field"),
        ("H(30-10) * * * *", "bad H range"),
        ("H(0-99) * * * *", "bad H range"),
        ("H/0 * * * *", "step 0"),
    ],
)
def test_invalid_cron_is_refused(expr: str, reason: str) -> None:
    with pytest.raises(InvalidSchedule, match=re.escape(reason)) as caught:
        cron_trigger(expr, schedule_id="x")
    assert (caught.value.field, caught.value.value) == ("cron", expr)
    assert "\n" not in caught.value.reason


def test_non_string_cron_is_refused() -> None:
    with pytest.raises(InvalidSchedule, match="string") as caught:
        CronTrigger(5, "UTC")  # type: ignore[arg-type]
    assert caught.value.field == "cron"


BAD_ZONES: list[object] = ["", "Mars/Olympus", "../x", "/etc/passwd", "Europe", "localtime"]
BAD_ZONES += ["europe/berlin", "UTC ", "zone.tab", "Europe/Berlin\x00", None, 5]


@pytest.mark.parametrize("tz", BAD_ZONES)
def test_unknown_timezone_is_refused(tz: object) -> None:
    with pytest.raises(InvalidSchedule, match="unknown IANA timezone") as caught:
        load_zone(tz)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value) == ("timezone", tz)
    with pytest.raises(InvalidSchedule) as again:
        cron_trigger("* * * * *", tz)  # type: ignore[arg-type]
    assert again.value.field == "timezone"


def test_known_timezones_load() -> None:
    assert load_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert cron_trigger("0 * * * *", "Australia/Lord_Howe").tz == "Australia/Lord_Howe"


@pytest.mark.parametrize("every", [0, -1, -60_000, 1.5, True, "30s", None])
def test_bad_interval_is_refused(every: object) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        interval_trigger(every)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.value) == ("every", every)


def test_bad_interval_origin_is_refused() -> None:
    with pytest.raises(InvalidSchedule) as caught:
        IntervalTrigger(1000, 1.5)  # type: ignore[arg-type]
    assert caught.value.field == "every"


# -- properties ----------------------------------------------------------------------

ALIAS_FIELDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
}
BOUNDS = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]  # second first


def values(token: str, lo: int, hi: int) -> frozenset[int]:
    out: set[int] = set()
    for item in token.split(","):
        span, _, step = item.partition("/")
        first, _, last = span.partition("-")
        a, b = (lo, hi) if span == "*" else (int(first), int(last or first))
        out.update(range(a, b + 1, int(step or 1)))
    return frozenset(out)


class Oracle:
    """An independent, brute-force reading of the documented semantics."""

    def __init__(self, expr: str, tz: str) -> None:
        fields = ALIAS_FIELDS.get(expr, expr).split()
        fields = fields if len(fields) == 6 else ["0", *fields]
        self.sets = [values(tok, lo, hi) for tok, (lo, hi) in zip(fields, BOUNDS, strict=True)]
        self.either_day = fields[3] != "*" and fields[5] != "*"
        self.interval_hours = fields[2].startswith("*")
        self.zone = ZoneInfo(tz)

    def matches(self, wall: datetime) -> bool:
        sec, minute, hour, dom, month, dow = self.sets
        if wall.second not in sec or wall.minute not in minute or wall.hour not in hour:
            return False
        day = (wall.day in dom, wall.isoweekday() % 7 in dow)
        return wall.month in month and (any(day) if self.either_day else all(day))

    def fires_at(self, at_s: int) -> bool:
        local = datetime.fromtimestamp(at_s, self.zone)
        if local.fold and not self.interval_hours:
            return False
        if self.matches(local.replace(tzinfo=None)):
            return True
        before = datetime.fromtimestamp(at_s - 1, self.zone).utcoffset()
        after = local.utcoffset()
        if before is None or after is None or after <= before:
            return False
        gap_end = local.replace(tzinfo=None)  # a gap ends here: did a skipped wall time match?
        gap_start = gap_end - (after - before)
        walls = range(int((after - before).total_seconds()))
        return any(self.matches(gap_start + timedelta(seconds=s)) for s in walls)

    def fires(self, after_ms: int, until_ms: int) -> list[int]:
        first_minute_s = after_ms // MINUTE * 60
        return [
            (minute_s + s) * SECOND
            for minute_s in range(first_minute_s, until_ms // SECOND + 1, 60)
            for s in sorted(self.sets[0] | {0})  # a gap ends on a whole minute
            if after_ms < (minute_s + s) * SECOND <= until_ms and self.fires_at(minute_s + s)
        ]


def numbers(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(str)


def spans(lo: int, hi: int) -> st.SearchStrategy[str]:
    pair = st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(sorted)
    return pair.map(lambda p: f"{p[0]}-{p[1]}")


def lists(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.lists(st.integers(lo, hi), min_size=2, max_size=3, unique=True).map(
        lambda xs: ",".join(map(str, xs))
    )


def steps(lo: int, hi: int, top: int) -> st.SearchStrategy[str]:
    return st.integers(2, top).map(lambda n: f"*/{n}") | spans(lo, hi).flatmap(
        lambda s: st.integers(2, top).map(lambda n: f"{s}/{n}")
    )


MINUTES = st.just("*") | numbers(0, 59) | spans(0, 59) | lists(0, 59) | steps(0, 59, 30)
HOURS = st.just("*") | numbers(0, 23) | spans(0, 23) | lists(0, 23) | steps(0, 23, 12)
DAYS = st.sampled_from(["*", "*", "*", "1", "15", "31", "1-10", "*/10"])
MONTHS = st.sampled_from(["*", "*", "*", "3", "4", "10", "11", "3,4,10,11", "*/2"])
WEEKDAYS = st.sampled_from(["*", "*", "*", "0", "1-5", "0,6", "3"])
SECONDS = st.sampled_from([None, None, "0", "30", "*/20", "15,45"])


@st.composite
def expressions(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(sorted(ALIAS_FIELDS)))
    parts = [draw(MINUTES), draw(HOURS), draw(DAYS), draw(MONTHS), draw(WEEKDAYS)]
    if parts[2:4] in (["31", "4"], ["31", "11"]):
        parts[3] = "*"  # never fires, refused; tested above
    second = draw(SECONDS)
    return " ".join(parts if second is None else [second, *parts])


@st.composite
def moments(draw: st.DrawFn) -> tuple[str, int]:
    """A zone and an instant, often within a few hours of one of its transitions."""
    tz = draw(st.sampled_from(ZONES))
    near = [ms(at) for zone, at in TRANSITIONS if zone == tz]
    use_transition = draw(st.booleans())
    if near and use_transition:
        shift = draw(st.integers(-4 * HOUR, 2 * HOUR))
        return tz, draw(st.sampled_from(near)) + shift
    return tz, draw(st.integers(ms("2026-01-01T00:00:00Z"), ms("2029-12-31T00:00:00Z")))


@settings(max_examples=200, deadline=None)
@given(expressions(), moments())
def test_fires_equal_brute_force_over_a_window(expr: str, moment: tuple[str, int]) -> None:
    tz, after = moment
    until = after + 5 * HOUR
    trigger = cron_trigger(expr, tz)
    assert fires_between(trigger, after, until, 10_000) == Oracle(expr, tz).fires(after, until)


@settings(max_examples=200, deadline=None)
@given(expressions(), moments())
def test_fires_are_increasing_documented_and_consistent(expr: str, moment: tuple[str, int]) -> None:
    tz, after = moment
    trigger = cron_trigger(expr, tz)
    oracle = Oracle(expr, tz)
    fires = next_fires(trigger, after, 6)
    assert fires[0] > after
    assert all(a < b for a, b in pairwise(fires))
    assert all(oracle.fires_at(f // SECOND) for f in fires)
    assert next_fire_ms(trigger, after) == fires[0]
    for earlier, later in pairwise(fires):
        assert next_fire_ms(trigger, later - 1) == later
        assert next_fire_ms(trigger, (earlier + later) // 2) == later
        assert next_fires(trigger, earlier, 1) == [later]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10 * DAY), st.integers(-DAY, DAY), st.integers(-(10**13), 10**13))
def test_interval_fires_are_on_the_grid(every: int, origin: int, after: int) -> None:
    fire = next_fire_ms(interval_trigger(every, origin), after)
    assert after < fire <= after + every
    assert (fire - origin) % every == 0


TOKENS = st.sampled_from([*"0123456789*/-,LW#H?() ", "mon", "jan", "L5", "60", "@daily", "R"])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30) | st.lists(TOKENS, max_size=20).map("".join))
def test_any_text_is_a_trigger_or_invalid_schedule(text: str) -> None:
    try:
        trigger = cron_trigger(text, "Europe/Berlin", schedule_id="fuzz")
    except InvalidSchedule as refused:
        assert refused.field == "cron"
        return
    assert next_fire_ms(trigger, 0) > 0


def test_property_oracle_agrees_on_a_known_case() -> None:
    """Guard the oracle itself, so the properties above cannot pass vacuously."""
    oracle = Oracle("30 2 * * *", "Europe/Berlin")
    expected = [ms("2027-03-27T01:30:00Z"), ms("2027-03-28T01:00:00Z")]
    assert oracle.fires(ms("2027-03-27T00:00:00Z"), ms("2027-03-28T12:00:00Z")) == expected
    fold = Oracle("*/30 * * * *", "Europe/Berlin").fires(
        ms("2027-10-31T00:00:00Z"), ms("2027-10-31T02:00:00Z")
    )
    assert len(fold) == 4
