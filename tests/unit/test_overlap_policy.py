"""The overlap policy's decisions as tables (pure: no Redis, no clock).

A 10-second schedule whose run of the fire at T took 35 s: the fires at T+10s, +20s
and +30s passed while it was in flight, and the ack comes at T+35s.
"""

from __future__ import annotations

from typing import Any

import pytest

from scheduler import policy
from scheduler.clock import iso
from scheduler.engine import cancel
from scheduler.engine.decide import Kind, decide
from scheduler.engine.runs import InFlight
from scheduler.model import Schedule
from scheduler.protocol import DUE_FIELDS
from scheduler.store import HistoryEntry
from scheduler.timeline import explain

T_MS = 1_800_000_000_000  # on the 10 s grid
ACK_MS = T_MS + 35_000
FOLLOWING_MS = T_MS + 10_000  # the first fire after the one that ran


def every_10s(**settings: Any) -> Schedule:
    return Schedule.from_dict(
        {"id": "reports", "target": "myapp.tasks.reports.daily_summary", "every": "10s", **settings}
    )


@pytest.mark.parametrize(
    ("overlap", "misfire", "expected"),
    [
        # skip: the three passed fires go to the misfire policy, as without an overlap policy
        ("skip", "coalesce", policy.Resolution(T_MS + 30_000, 2, True)),
        ("skip", "all", policy.Resolution(T_MS + 10_000, 0, True)),
        ("skip", "skip", policy.Resolution(T_MS + 40_000, 3, False)),
        # buffer_one: the latest waits, the two before it are missed, whatever the misfire policy
        ("buffer_one", "coalesce", policy.Resolution(T_MS + 30_000, 2, True)),
        ("buffer_one", "all", policy.Resolution(T_MS + 30_000, 2, True)),
        ("buffer_one", "skip", policy.Resolution(T_MS + 30_000, 2, True)),
        # buffer_all: the oldest waits; the next ack finds the next one
        ("buffer_all", "coalesce", policy.Resolution(T_MS + 10_000, 0, True)),
        ("buffer_all", "all", policy.Resolution(T_MS + 10_000, 0, True)),
        ("buffer_all", "skip", policy.Resolution(T_MS + 10_000, 0, True)),
        # cancel_other: a run that outlived its next fire only if no look cancelled it
        # (no leader meanwhile): the newest runs, as a cancel would have chosen
        ("cancel_other", "all", policy.Resolution(T_MS + 30_000, 2, True)),
        ("cancel_other", "skip", policy.Resolution(T_MS + 30_000, 2, True)),
    ],
)
def test_fires_passed_during_a_run(overlap: str, misfire: str, expected: policy.Resolution) -> None:
    schedule = every_10s(overlap=overlap, misfire=misfire)
    assert policy.resolve_after_run(schedule, FOLLOWING_MS, ACK_MS) == expected


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        # a 12 s window at T+35s keeps the fires at T+30s only (T+20s is 15 s old)
        ("skip", policy.Resolution(T_MS + 30_000, 2, True)),
        ("buffer_one", policy.Resolution(T_MS + 30_000, 2, True)),
        ("buffer_all", policy.Resolution(T_MS + 30_000, 2, True)),
    ],
)
def test_catchup_window_drops_old_fires_under_every_policy(overlap: str, expected: policy.Resolution) -> None:
    schedule = every_10s(overlap=overlap, catchup_window="12s")
    assert policy.resolve_after_run(schedule, FOLLOWING_MS, ACK_MS) == expected


@pytest.mark.parametrize("overlap", ["skip", "buffer_one", "buffer_all"])
def test_a_run_shorter_than_the_period_leaves_the_next_fire_alone(overlap: str) -> None:
    schedule = every_10s(overlap=overlap, misfire="skip")
    assert policy.resolve_after_run(schedule, FOLLOWING_MS, T_MS + 4_000) == policy.Resolution(
        FOLLOWING_MS, 0, False
    )


@pytest.mark.parametrize(
    ("overlap", "last_run_ms", "expected"),
    [
        # the fire passed while the previous run was in flight (at or before its end):
        # a buffering policy kept it waiting, so it runs as it is, 25 s late
        ("buffer_all", ACK_MS, policy.Resolution(FOLLOWING_MS, 0, True)),
        ("buffer_one", FOLLOWING_MS, policy.Resolution(FOLLOWING_MS, 0, True)),
        # skip never keeps one: the misfire policy (coalesce) decides
        ("skip", ACK_MS, policy.Resolution(T_MS + 30_000, 2, True)),
        # after the previous run's end, or no run yet: missed while no scheduler was up
        ("buffer_all", FOLLOWING_MS - 1, policy.Resolution(T_MS + 30_000, 2, True)),
        ("buffer_all", None, policy.Resolution(T_MS + 30_000, 2, True)),
    ],
)
def test_dispatch_of_a_late_fire(overlap: str, last_run_ms: int | None, expected: policy.Resolution) -> None:
    schedule = every_10s(overlap=overlap)
    assert policy.resolve_due(schedule, FOLLOWING_MS, ACK_MS, last_run_ms) == expected


@pytest.mark.parametrize(
    ("overlap", "fire_ms"),
    [("buffer_all", FOLLOWING_MS), ("skip", T_MS + 30_000)],
)
def test_dispatch_decides_from_last_run_at(overlap: str, fire_ms: int) -> None:
    schedule = every_10s(overlap=overlap)
    row: list[bytes | None] = [
        schedule.to_json().encode(),
        b"2",
        b"due",
        iso(FOLLOWING_MS).encode(),
        b"1",
        iso(ACK_MS).encode(),
    ]
    row += [None] * (len(DUE_FIELDS) - len(row))
    decision = decide("reports", row, FOLLOWING_MS, ACK_MS)
    assert (decision.kind, decision.fire_ms, decision.job_id) == (Kind.RUN, fire_ms, f"reports-{fire_ms}-1")


def test_a_damaged_last_run_at_falls_back_to_the_misfire_policy() -> None:
    schedule = every_10s(overlap="buffer_all")
    row: list[bytes | None] = [
        schedule.to_json().encode(),
        b"2",
        b"due",
        iso(FOLLOWING_MS).encode(),
        b"1",
        b"yesterday",
    ]
    row += [None] * (len(DUE_FIELDS) - len(row))
    assert decide("reports", row, FOLLOWING_MS, ACK_MS).fire_ms == T_MS + 30_000


def test_overlap_is_stored_only_when_not_the_default() -> None:
    assert "overlap" not in every_10s().to_json()
    assert '"overlap":"buffer_all"' in every_10s(overlap="buffer_all").to_json()
    assert every_10s(overlap="buffer_one").to_dict()["overlap"] == "buffer_one"


def test_an_unknown_overlap_names_the_field_and_the_choices() -> None:
    choices = "skip, buffer_one, buffer_all, cancel_other, allow_all"
    with pytest.raises(ValueError, match=rf"overlap: must be one of {choices} \(got 'queue'\)"):
        every_10s(overlap="queue")


# -- cancel_other -----------------------------------------------------------------------


def in_flight(schedule: Schedule, fire_ms: int = T_MS, resumed_at: str = "") -> InFlight:
    return InFlight(
        schedule.id, f"reports-{fire_ms}-1", fire_ms, 1, "2", schedule, fire_ms + 20, resumed_at=resumed_at
    )


@pytest.mark.parametrize(
    ("now_ms", "expected"),
    [
        (FOLLOWING_MS - 1, None),  # the next fire has not come: the run goes on
        (FOLLOWING_MS, policy.Resolution(FOLLOWING_MS, 0, True)),  # it replaces the run
        (FOLLOWING_MS + 500, policy.Resolution(FOLLOWING_MS, 0, True)),
        # a late look (no leader for a while): the newest replaces it, the others are missed
        (ACK_MS, policy.Resolution(T_MS + 30_000, 2, True)),
    ],
)
def test_cancel_other_replaces_the_run_when_the_next_fire_passes(
    now_ms: int, expected: policy.Resolution | None
) -> None:
    run = in_flight(every_10s(overlap="cancel_other", misfire="skip"))
    assert cancel.replacement(run, now_ms) == expected


@pytest.mark.parametrize("overlap", ["skip", "buffer_one", "buffer_all"])
def test_only_cancel_other_cancels(overlap: str) -> None:
    run = in_flight(every_10s(overlap=overlap))
    assert cancel.replacement(run, ACK_MS) is None
    assert cancel.look_ms(run, ACK_MS + 30_000) == ACK_MS + 30_000


def test_the_watchdog_looks_no_later_than_the_next_fire() -> None:
    run = in_flight(every_10s(overlap="cancel_other"))
    assert cancel.look_ms(run, T_MS + 30_000) == FOLLOWING_MS
    assert cancel.look_ms(run, T_MS + 5_000) == T_MS + 5_000


def test_after_a_resume_only_fires_after_it_replace_the_run() -> None:
    # paused and resumed at T+25s with the run in flight: the fires at +10s and +20s were
    # the pause's; the one at +30s is the first that may cancel it
    run = in_flight(every_10s(overlap="cancel_other"), resumed_at=iso(T_MS + 25_000))
    assert cancel.replacement(run, T_MS + 29_000) is None
    assert cancel.replacement(run, T_MS + 30_000) == policy.Resolution(T_MS + 30_000, 0, True)


def test_history_shows_a_cancelled_run_and_what_replaced_it() -> None:
    old, new = f"reports-{T_MS}-1", f"reports-{FOLLOWING_MS}-1"
    entries = [
        HistoryEntry("1-0", T_MS, "dispatched", {"fire_at": iso(T_MS), "job_id": old, "attempt": "1"}),
        HistoryEntry(
            "2-0",
            FOLLOWING_MS,
            "cancelled",
            {"fire_at": iso(T_MS), "job_id": old, "next_fire_at": iso(FOLLOWING_MS)},
        ),
        HistoryEntry("3-0", FOLLOWING_MS, "dispatched", {"fire_at": iso(FOLLOWING_MS), "job_id": new}),
    ]
    lines = explain(entries, new, lambda ms: f"<{ms}>")
    assert [line.outcome for line in lines] == [
        "cancelled",
        f"stopped for the fire at <{FOLLOWING_MS}> (overlap cancel_other)",
        "in flight",
    ]
