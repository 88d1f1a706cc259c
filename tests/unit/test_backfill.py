"""Backfill's pure parts: the window's fires, what a backfill skips, the leader's next
fire, the status line, and the scripts' replies."""

from __future__ import annotations

import re
from enum import IntEnum

import pytest

from scheduler import backfill, cron, scripts
from scheduler.backfill import BadWindow, Status
from scheduler.clock import parse_iso_ms
from scheduler.protocol import (
    BACKFILL_RUN_FIELDS,
    BackfillCancelReply,
    BackfillDispatchReply,
    BackfillOverlap,
    BackfillRunReply,
    BackfillStartReply,
    BackfillState,
    lua_list,
)

BERLIN_2AM = cron.cron_trigger("30 2 * * *", "Europe/Berlin")
MINUTELY = cron.cron_trigger("* * * * *", "Europe/Berlin")
NOW = parse_iso_ms("2026-12-01T00:00:00Z")


def ms(text: str) -> int:
    return parse_iso_ms(text)


def test_the_window_is_half_open_and_in_the_schedule_zone() -> None:
    # 02:30 Berlin = 00:30 UTC in summer, 01:30 in winter; 2026-10-25 falls back and its
    # repeated 02:30 fires once, in the first pass (CEST); the 26th's fire is the end: out
    fires = backfill.window_fires(BERLIN_2AM, ms("2026-10-24T00:30:00Z"), ms("2026-10-26T01:30:00Z"), NOW)
    assert fires == [ms("2026-10-24T00:30:00Z"), ms("2026-10-25T00:30:00Z")]
    assert backfill.window_fires(MINUTELY, ms("2026-11-30T10:00:00Z"), ms("2026-11-30T10:03:00Z"), NOW) == [
        ms("2026-11-30T10:00:00Z"),
        ms("2026-11-30T10:01:00Z"),
        ms("2026-11-30T10:02:00Z"),
    ]


def test_a_spring_forward_day_has_its_one_fire_at_the_gap() -> None:
    fires = backfill.window_fires(BERLIN_2AM, ms("2026-03-29T00:00:00Z"), ms("2026-03-30T00:00:00Z"), NOW)
    assert fires == [ms("2026-03-29T01:00:00Z")]  # 02:30 does not exist: 03:00 CEST


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-30T10:00:00Z", "2026-11-30T10:00:00Z", "must be before --to"),
        ("2026-11-30T11:00:00Z", "2026-11-30T10:00:00Z", "must be before --to"),
        ("2026-11-30T10:00:00Z", "2026-12-01T00:00:01Z", "is in the future"),
        ("2026-11-30T10:00:10Z", "2026-11-30T10:00:50Z", "no fire of the schedule falls in"),
        ("2026-11-01T00:00:00Z", "2026-11-08T00:00:01Z", "more than 10,000 fires"),
    ],
)
def test_bad_windows_are_refused_with_the_reason(start: str, end: str, message: str) -> None:
    with pytest.raises(BadWindow, match=message):
        backfill.window_fires(MINUTELY, ms(start), ms(end), NOW)


def test_the_cap_allows_exactly_max_fires() -> None:
    start = ms("2026-11-01T00:00:00Z")
    fires = backfill.window_fires(MINUTELY, start, start + backfill.MAX_FIRES * 60_000, NOW)
    assert len(fires) == backfill.MAX_FIRES


def test_chains_cover_their_ends_and_damaged_members_are_ignored() -> None:
    chains = backfill.parse_chains([b"1000:3000:4000", b"garbage", "7000:7000:8000", b"1:2"])
    assert chains == [(1000, 3000), (7000, 7000)]
    assert [f for f in range(0, 9000, 1000) if backfill.succeeded(f, chains)] == [1000, 2000, 3000, 7000]


def test_the_plan_skips_what_succeeded_unless_forced() -> None:
    fires = [1000, 2000, 3000, 4000]
    kwargs = {"from_ms": 1000, "to_ms": 5000, "overlap": BackfillOverlap.ALLOW}
    plan = backfill.plan("s", fires, [(2000, 3000)], force=False, **kwargs)  # type: ignore[arg-type]
    assert (plan.to_run, plan.skipped) == ([1000, 4000], (2000, 3000))
    forced = backfill.plan("s", fires, [(2000, 3000)], force=True, **kwargs)  # type: ignore[arg-type]
    assert (forced.to_run, forced.skipped) == (fires, ())


def test_the_next_fire_passes_over_succeeded_ones_and_finishes_at_the_end() -> None:
    every_s = cron.interval_trigger(1000)
    chains = [(2000, 3000)]
    assert backfill.next_fire(every_s, 999, 5000, chains, force=False) == backfill.Next(1000, 999, 0, False)
    assert backfill.next_fire(every_s, 1000, 5000, chains, force=False) == backfill.Next(4000, 3000, 2, False)
    assert backfill.next_fire(every_s, 1000, 5000, chains, force=True) == backfill.Next(2000, 1000, 0, False)
    assert backfill.next_fire(every_s, 4000, 5000, chains, force=False) == backfill.Next(None, 4000, 0, True)
    # only fires before the window's end count: 5000 is outside [.., 5000)
    assert backfill.next_fire(every_s, 3000, 5000, [(4000, 9000)], force=False) == backfill.Next(
        None, 4000, 1, True
    )


def test_many_succeeded_fires_are_passed_over_a_step_at_a_time() -> None:
    every_s = cron.interval_trigger(1000)
    step = backfill.next_fire(every_s, 0, 100_000, [(1000, 50_000)], force=False, limit=10)
    assert step == backfill.Next(None, 10_000, 10, False)  # not done: the next step goes on


def test_job_ids_stay_in_rqs_alphabet_and_apart_from_live_ones() -> None:
    job = backfill.job_id("nightly-report", 1_795_397_400_000, 2)
    assert job == "nightly-report-bf-1795397400000-2"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", job)


def test_status_reads_its_hash_and_says_how_far_it_got() -> None:
    raw = {
        b"state": b"active",
        b"from_ms": str(ms("2026-11-30T10:00:00Z")).encode(),
        b"to_ms": str(ms("2026-11-30T11:40:00Z")).encode(),
        b"after_ms": str(ms("2026-11-30T10:39:00Z")).encode(),
        b"total": b"100",
        b"succeeded": b"38",
        b"skipped": b"2",
        b"failed": b"0",
        b"overlap": b"skip",
        b"force": b"0",
        b"attempt": b"1",
        b"job_id": b"rollup-bf-1-1",
        b"fire_ms": str(ms("2026-11-30T10:40:00Z")).encode(),
    }
    status = Status.of("rollup", raw)
    assert (status.state, status.overlap, status.finished) == (BackfillState.ACTIVE, BackfillOverlap.SKIP, 40)
    assert status.line() == (
        "backfill rollup [2026-11-30T10:00:00.000Z, 2026-11-30T11:40:00.000Z): 40/100 fires "
        "(38 ran, 2 skipped, 0 failed), active, running 2026-11-30T10:40:00.000Z"
    )
    assert status.to_json()["in_flight"] == {
        "job_id": "rollup-bf-1-1",
        "fire_at": "2026-11-30T10:40:00.000Z",
        "attempt": 1,
    }


_INT_RETURN = re.compile(r"\breturn (-?\d+)\b")


@pytest.mark.parametrize(
    ("script", "reply"),
    [
        (scripts.BACKFILL_START, BackfillStartReply),
        (scripts.BACKFILL_DISPATCH, BackfillDispatchReply),
        (scripts.BACKFILL_ACK, BackfillRunReply),
        (scripts.BACKFILL_FAIL, BackfillRunReply),
        (scripts.BACKFILL_CANCEL, BackfillCancelReply),
    ],
)
def test_each_backfill_script_returns_exactly_what_its_reply_enum_names(
    script: str, reply: type[IntEnum]
) -> None:
    assert {int(v) for v in _INT_RETURN.findall(script)} == {m.value for m in reply}


def test_the_run_fields_dispatch_sets_are_the_ones_every_ending_clears() -> None:
    assert set(BACKFILL_RUN_FIELDS) <= set(
        re.findall(r"'(\w+)', (?:job|fire_ms|epoch|now)\b", scripts.BACKFILL_DISPATCH)
    )
    for body in (scripts.BACKFILL_ACK, scripts.BACKFILL_FAIL, scripts.BACKFILL_CANCEL):
        assert lua_list("RUN_FIELDS", BACKFILL_RUN_FIELDS) in body
        assert "unpack(RUN_FIELDS)" in body
