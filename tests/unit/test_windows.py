"""Several crons, start_at/end_at, exclude and max_runs: pure table tests across both
DST transitions of Europe/Berlin and America/New_York (no clock, no Redis).

2027 transitions: Berlin 28 Mar 02:00 -> 03:00 and 31 Oct 03:00 -> 02:00; New York
14 Mar 02:00 -> 03:00 and 7 Nov 02:00 -> 01:00. Expected fires are written as local
times with their offset, so a fold's two passes read apart."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from scheduler import cron, preview, windows
from scheduler.errors import InvalidSchedule
from scheduler.model import Schedule
from scheduler.web import present

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


def ms(text: str) -> int:
    return cron.datetime_to_ms(datetime.fromisoformat(text))


def local(fire_ms: int, tz: str) -> str:
    return cron.ms_to_datetime(fire_ms, tz).isoformat(timespec="minutes")


def schedule(tz: str, **settings: Any) -> Schedule:
    return Schedule.from_dict(
        {"id": "daily-summary", "target": "myapp.tasks.reports.daily_summary", "timezone": tz, **settings}
    )


def fires(s: Schedule, after: str, n: int) -> list[str]:
    """The next ``n`` fires, local; stops at the end of the window."""
    out, cursor = [], ms(after)
    for _ in range(n):
        cursor = cron.next_fire_ms(s.trigger, cursor)
        if cursor >= windows.NEVER_MS:
            out.append("never")
            break
        out.append(local(cursor, s.timezone))
    return out


# -- several crons: the union, each instant once -------------------------------------------

CRONS = [
    pytest.param(  # 02:30 falls in the gap and fires at 03:00: the same instant as "0 3"
        BERLIN,
        ["30 2 * * *", "0 3 * * *"],
        "2027-03-27T00:00+01:00",
        [
            "2027-03-27T02:30+01:00",
            "2027-03-27T03:00+01:00",
            "2027-03-28T03:00+02:00",
            "2027-03-29T02:30+02:00",
            "2027-03-29T03:00+02:00",
        ],
        id="berlin-gap-two-crons-one-instant",
    ),
    pytest.param(  # a fixed 02:30 fires in the fold's first pass only
        BERLIN,
        ["30 2 * * *", "45 1 * * *"],
        "2027-10-31T00:00+02:00",
        ["2027-10-31T01:45+02:00", "2027-10-31T02:30+02:00", "2027-11-01T01:45+01:00"],
        id="berlin-fold",
    ),
    pytest.param(
        NEW_YORK,
        ["30 2 * * *", "0 12 * * 0"],
        "2027-03-14T00:00-05:00",
        ["2027-03-14T03:00-04:00", "2027-03-14T12:00-04:00", "2027-03-15T02:30-04:00"],
        id="new-york-gap",
    ),
    pytest.param(  # two expressions naming the same instant: one fire
        NEW_YORK,
        ["30 1 * * *", "30 1 * * 0"],
        "2027-11-06T12:00-04:00",
        ["2027-11-07T01:30-04:00", "2027-11-08T01:30-05:00"],
        id="new-york-fold-same-instant-once",
    ),
    pytest.param(  # an interval-like hour fires in both passes; the other cron once
        NEW_YORK,
        ["0,30 * * * *", "30 1 * * *"],
        "2027-11-07T00:50-04:00",
        [
            "2027-11-07T01:00-04:00",
            "2027-11-07T01:30-04:00",
            "2027-11-07T01:00-05:00",
            "2027-11-07T01:30-05:00",
            "2027-11-07T02:00-05:00",
        ],
        id="new-york-fold-both-passes",
    ),
]


@pytest.mark.parametrize(("tz", "crons", "after", "expected"), CRONS)
def test_several_crons_fire_at_their_union_once_per_instant(
    tz: str, crons: list[str], after: str, expected: list[str]
) -> None:
    assert fires(schedule(tz, cron=crons), after, len(expected)) == expected


# -- start_at / end_at (inclusive) ----------------------------------------------------------

WINDOWS = [
    pytest.param(  # a time without an offset is read in the zone: 02:00 of the first pass
        BERLIN,
        {"cron": "*/15 * * * *", "start_at": "2027-10-31T02:00", "end_at": "2027-10-31T02:00:00+01:00"},
        "2027-10-30T00:00+02:00",
        [
            "2027-10-31T02:00+02:00",
            "2027-10-31T02:15+02:00",
            "2027-10-31T02:30+02:00",
            "2027-10-31T02:45+02:00",
            "2027-10-31T02:00+01:00",
            "never",
        ],
        id="berlin-fold-both-passes-inside",
    ),
    pytest.param(
        BERLIN,
        {"cron": "30 2 * * *", "start_at": "2027-03-28T00:00", "end_at": "2027-03-28T23:59"},
        "2027-03-01T00:00+01:00",
        ["2027-03-28T03:00+02:00", "never"],
        id="berlin-gap-one-day",
    ),
    pytest.param(  # 02:00 does not exist on the 14th: start_at is read as 03:00 EDT
        NEW_YORK,
        {"cron": "*/30 * * * *", "start_at": "2027-03-14T02:00", "end_at": "2027-03-14T04:00-04:00"},
        "2027-03-13T00:00-05:00",
        ["2027-03-14T03:00-04:00", "2027-03-14T03:30-04:00", "2027-03-14T04:00-04:00", "never"],
        id="new-york-gap-start-in-the-gap",
    ),
    pytest.param(  # the end is in the fold's second pass; 01:30 fired in the first
        NEW_YORK,
        {"cron": "30 1 * * *", "end_at": "2027-11-07T01:30-05:00"},
        "2027-11-05T12:00-04:00",
        ["2027-11-06T01:30-04:00", "2027-11-07T01:30-04:00", "never"],
        id="new-york-fold-end",
    ),
    pytest.param(  # an interval is filtered, not re-anchored
        NEW_YORK,
        {"every": "1h", "start_at": "2027-11-07T00:30-04:00", "end_at": "2027-11-07T02:00-05:00"},
        "2027-11-06T00:00-04:00",
        [
            "2027-11-07T01:00-04:00",
            "2027-11-07T01:00-05:00",
            "2027-11-07T02:00-05:00",
            "never",
        ],
        id="new-york-fold-every",
    ),
]


@pytest.mark.parametrize(("tz", "settings", "after", "expected"), WINDOWS)
def test_no_fire_outside_the_window(
    tz: str, settings: dict[str, Any], after: str, expected: list[str]
) -> None:
    assert fires(schedule(tz, **settings), after, len(expected)) == expected


# -- exclude ---------------------------------------------------------------------------

EXCLUDES = [
    pytest.param(  # the gap's fire (03:00 on the 28th) is on an excluded date
        BERLIN,
        {"cron": "30 2 * * *", "exclude": ["2027-03-28"]},
        "2027-03-26T12:00+01:00",
        ["2027-03-27T02:30+01:00", "2027-03-29T02:30+02:00"],
        ["2027-03-28T03:00+02:00"],
        id="berlin-gap-date",
    ),
    pytest.param(  # a mask on the hour drops both passes of the fold
        BERLIN,
        {"cron": "*/30 * * * *", "exclude": ["* 2 * * *"]},
        "2027-10-31T01:00+02:00",
        ["2027-10-31T01:30+02:00", "2027-10-31T03:00+01:00"],
        [
            "2027-10-31T02:00+02:00",
            "2027-10-31T02:30+02:00",
            "2027-10-31T02:00+01:00",
            "2027-10-31T02:30+01:00",
        ],
        id="berlin-fold-mask",
    ),
    pytest.param(  # 02:00 EST does not exist: the hourly fire at 03:00 EDT is masked
        NEW_YORK,
        {"cron": "0 * * * *", "exclude": ["* 2-3 * * *"]},
        "2027-03-14T00:30-05:00",
        ["2027-03-14T01:00-05:00", "2027-03-14T04:00-04:00"],
        ["2027-03-14T03:00-04:00"],
        id="new-york-gap-mask",
    ),
    pytest.param(  # a holiday range across the fold: every fire of it skipped
        NEW_YORK,
        {"cron": ["30 1 * * *", "0 9 * * 1-5"], "exclude": ["2027-11-06..2027-11-07", "2027-11-09"]},
        "2027-11-05T12:00-04:00",
        ["2027-11-08T01:30-05:00", "2027-11-08T09:00-05:00", "2027-11-10T01:30-05:00"],
        ["2027-11-06T01:30-04:00", "2027-11-07T01:30-04:00"],
        id="new-york-fold-range",
    ),
]


@pytest.mark.parametrize(("tz", "settings", "after", "expected", "skipped"), EXCLUDES)
def test_excluded_fires_are_skipped_and_named(
    tz: str, settings: dict[str, Any], after: str, expected: list[str], skipped: list[str]
) -> None:
    s = schedule(tz, **settings)
    assert fires(s, after, len(expected)) == expected
    first_kept = cron.next_fire_ms(s.trigger, ms(after))
    named = windows.skipped_before(s.trigger, ms(after), ms(expected[1]), 100)
    assert [local(f, tz) for f in named if f > first_kept] == [
        f for f in skipped if ms(f) > first_kept
    ]  # between the first two kept fires
    assert first_kept == ms(expected[0])


def test_a_mask_that_drops_every_fire_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "MAX_EXCLUDED_IN_A_ROW", 50)
    s = schedule("UTC", every="1m", exclude=["* * * * *"])
    with pytest.raises(InvalidSchedule, match="drops more than"):
        cron.next_fire_ms(s.trigger, 0)


def test_a_long_exclusion_is_skipped_in_big_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dates, whole-day masks and whole-hour masks jump a day or an hour at a time: an
    every-second schedule does not step through each excluded fire."""
    monkeypatch.setattr(windows, "MAX_EXCLUDED_IN_A_ROW", 50)
    cases = [
        (["2027-12-01..2027-12-31"], "2027-11-30T23:59:59+01:00", "2028-01-01T00:00+01:00"),
        (["* * * * 0,6"], "2027-10-29T23:59:59+02:00", "2027-11-01T00:00+01:00"),  # across the fold
        (["* 0-6 * * *"], "2027-03-27T23:59:59+01:00", "2027-03-28T07:00+02:00"),  # across the gap
    ]
    for exclude, after, first in cases:
        s = schedule(BERLIN, every="1s", exclude=exclude)
        assert local(cron.next_fire_ms(s.trigger, ms(after)), BERLIN) == first, exclude


# -- the preview: all of the above, max_runs, and DST notes ------------------------------


def test_preview_flags_the_gap_and_skips_and_counts_runs_left() -> None:
    s = schedule(BERLIN, cron="30 2 * * *", max_runs=5, exclude=["2027-03-27"])
    result = preview.preview(s, ms("2027-03-25T12:00+01:00"), 10, runs_done=2)
    rows = [(local(r.fire_ms, BERLIN), r.skipped, r.notes) for r in result.rows]
    assert rows == [
        ("2027-03-26T02:30+01:00", False, ()),
        ("2027-03-27T02:30+01:00", True, ("skipped: excluded by '2027-03-27' (Sat 2027-03-27)",)),
        (
            "2027-03-28T03:00+02:00",
            False,
            ("02:30 does not exist on 2027-03-28 (DST gap): fires at 03:00 CEST",),
        ),
        ("2027-03-29T02:30+02:00", False, ()),
    ]
    assert result.ends == "max_runs 5 reached: completed"


BERLIN_REPEAT = "02:30 happens twice on 2027-10-31 (DST repeat): fires once, in the first pass (CEST)"
NEW_YORK_GAP = "02:00-02:40 (3 times) do not exist on 2027-03-14 (DST gap): fires at 03:00 EDT"
NEW_YORK_REPEAT = "01:30 happens twice on 2027-11-07 (DST repeat): fires in both passes; this is the"


@pytest.mark.parametrize(
    ("tz", "expr", "after", "expected"),
    [
        (BERLIN, "30 2 * * *", "2027-10-31T00:00+02:00", [("2027-10-31T02:30+02:00", BERLIN_REPEAT)]),
        (NEW_YORK, "*/20 2 * * *", "2027-03-13T12:00-05:00", [("2027-03-14T03:00-04:00", NEW_YORK_GAP)]),
        (
            NEW_YORK,
            "30 * * * *",
            "2027-11-07T01:00-04:00",
            [
                ("2027-11-07T01:30-04:00", f"{NEW_YORK_REPEAT} first (EDT)"),
                ("2027-11-07T01:30-05:00", f"{NEW_YORK_REPEAT} second (EST)"),
            ],
        ),
    ],
)
def test_preview_notes_dst_gaps_and_repeats(
    tz: str, expr: str, after: str, expected: list[tuple[str, str]]
) -> None:
    result = preview.preview(schedule(tz, cron=expr), ms(after), len(expected))
    assert [(local(r.fire_ms, tz), "; ".join(r.notes)) for r in result.rows] == expected
    assert result.ends == ""


def test_preview_stops_at_the_end_of_the_window() -> None:
    s = schedule(NEW_YORK, cron="0 9 * * *", end_at="2027-03-15T09:00")
    result = preview.preview(s, ms("2027-03-13T12:00-05:00"), 10)
    assert [local(r.fire_ms, NEW_YORK) for r in result.rows] == [
        "2027-03-14T09:00-04:00",
        "2027-03-15T09:00-04:00",
    ]
    assert result.ends == "end_at 2027-03-15T13:00:00Z passed: completed"
    # every list of next fires stops there too (the dashboard's, misfire enumeration)
    assert len(cron.next_fires(s.trigger, ms("2027-03-13T12:00-05:00"), 10)) == 2
    assert [f["local"] for f in present.fires(s, ms("2027-03-13T12:00-05:00"), 10)] == [
        "2027-03-14 09:00:00 EDT",
        "2027-03-15 09:00:00 EDT",
    ]


# -- the definition: validation, compact stored form -----------------------------------


@pytest.mark.parametrize(
    ("settings", "field", "reason"),
    [
        ({"cron": []}, "cron", "non-empty list"),
        ({"cron": ["0 9 * * *", "0  9 * * *"]}, "cron", "same expression twice"),
        ({"cron": ["0 9 * * *", "0 25 * * *"]}, "cron", "hour value 25"),
        ({"cron": "0 9 * * *", "start_at": "tomorrow"}, "start_at", "ISO time"),
        (
            {"cron": "0 9 * * *", "start_at": "2027-02-01", "end_at": "2027-01-01"},
            "end_at",
            "before start_at",
        ),
        ({"cron": "0 9 * * *", "max_runs": 0}, "max_runs", "from 1 to"),
        ({"cron": "0 9 * * *", "exclude": ["2027-02-30"]}, "exclude", r"a date \(2026-12-25\)"),
        ({"cron": "0 9 * * *", "exclude": ["2027-12-26..2027-12-24"]}, "exclude", "must not end before"),
        ({"cron": "0 9 * * *", "exclude": ["* * 32 * *"]}, "exclude", "bad cron expression"),
        ({"cron": "0 9 * * *", "exclude": "christmas"}, "exclude", r"a date \(2026-12-25\)"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidSchedule, match=reason) as caught:
        schedule(BERLIN, **settings)
    assert caught.value.field == field


def test_stored_form_is_compact_and_round_trips() -> None:
    plain = schedule(BERLIN, cron="0 9 * * 1-5")
    assert "exclude" not in plain.to_json() and "start_at" not in plain.to_json()
    s = schedule(
        BERLIN,
        cron=["0 9 * * 1-5", "0 12 * * 6"],
        start_at="2027-01-04T00:00",
        exclude=["2027-12-25", "2027-12-31..2028-01-01"],
        max_runs=100,
    )
    stored = json.loads(s.to_json())
    assert stored == {
        "cron": ["0 9 * * 1-5", "0 12 * * 6"],
        "exclude": ["2027-12-25", "2027-12-31..2028-01-01"],
        "max_runs": 100,
        "start_at": "2027-01-03T23:00:00Z",
        "target": "myapp.tasks.reports.daily_summary",
        "timezone": BERLIN,
    }
    assert Schedule.from_dict({"id": s.id, **stored}) == s
    assert isinstance(plain.trigger, cron.CronTrigger)  # no plan when nothing needs one
