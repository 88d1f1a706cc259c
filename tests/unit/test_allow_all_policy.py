"""``overlap = allow_all`` with ``max_concurrent``: its decisions as tables (pure: no
Redis, no clock), and the settings it is refused with.

A 10-second schedule whose fire at T is pending; ``in_flight`` of its runs are in
flight when dispatch looks at it, at ``now``.
"""

from __future__ import annotations

from typing import Any

import pytest

from scheduler import policy, windows
from scheduler.clock import iso
from scheduler.engine.decide import Kind, decide
from scheduler.errors import InvalidSchedule
from scheduler.model import Schedule
from scheduler.protocol import CAP_FIELD, DUE_FIELDS, SLOT_WAIT_SCORE, TRIGGERED_FIELD
from scheduler.stored import SETTING_FIELDS

T_MS = 1_800_000_000_000  # on the 10 s grid
WAIT_MS = SLOT_WAIT_SCORE * 1000


def every_10s(**settings: Any) -> Schedule:
    raw = {"id": "reports", "target": "myapp.tasks.reports.daily_summary", "every": "10s"}
    return Schedule.from_dict({**raw, "overlap": "allow_all", "max_concurrent": 3, **settings})


def row(
    schedule: Schedule, in_flight: int | None, *, attempt: int = 1, triggered: int | None = None
) -> list[Any]:
    """DUE_READ's row for the schedule with its fire T pending (legacy definition field);
    ``triggered``: the fire TRIGGER marked asked for."""
    values = {
        "definition": schedule.to_json().encode(),
        "version": b"4",
        "state": b"due",
        "fire_at": iso(T_MS).encode(),
        "attempt": str(attempt).encode(),
        "last_run_at": None,
        "runs_in_flight": None if in_flight is None else str(in_flight).encode(),
        TRIGGERED_FIELD: None if triggered is None else iso(triggered).encode(),
    }
    return [values.get(f) for f in DUE_FIELDS]


@pytest.mark.parametrize(
    ("in_flight", "late_ms", "misfire", "expected"),
    [
        # under the cap, on time: a run of its own; the schedule stays due at T+10s
        (None, 0, "coalesce", (Kind.SPAWN, T_MS, 0, T_MS + 10_000)),
        (0, 0, "coalesce", (Kind.SPAWN, T_MS, 0, T_MS + 10_000)),
        (2, 0, "coalesce", (Kind.SPAWN, T_MS, 0, T_MS + 10_000)),
        # at the cap: the fire waits for a slot (a run's end makes it due again)
        (3, 0, "coalesce", (Kind.RESCHEDULE, T_MS, 0, WAIT_MS)),
        (5, 0, "all", (Kind.RESCHEDULE, T_MS, 0, WAIT_MS)),
        # woken 25 s late (fires T, +10s, +20s passed): the misfire policy decides
        (2, 25_000, "coalesce", (Kind.SPAWN, T_MS + 20_000, 2, T_MS + 30_000)),
        (2, 25_000, "all", (Kind.SPAWN, T_MS, 0, T_MS + 10_000)),
        (2, 25_000, "skip", (Kind.RESCHEDULE, T_MS + 30_000, 3, T_MS + 30_000)),
        # still at the cap however late: nothing dropped yet, it keeps waiting
        (3, 25_000, "skip", (Kind.RESCHEDULE, T_MS, 0, WAIT_MS)),
    ],
)
def test_dispatch_of_a_pending_fire(
    in_flight: int | None, late_ms: int, misfire: str, expected: tuple[Kind, int, int, int]
) -> None:
    """``expected``: the decision's kind, fire, fires dropped and due score."""
    schedule = every_10s(misfire=misfire)
    d = decide("reports", row(schedule, in_flight), T_MS, T_MS + late_ms)
    assert (d.kind, d.fire_ms, d.dropped, d.score_ms) == expected
    if d.kind is Kind.SPAWN:
        assert d.next_ms == d.fire_ms + 10_000
        assert d.job_id == f"reports-{d.fire_ms}-1"


@pytest.mark.parametrize("misfire", ["skip", "coalesce", "all"])
@pytest.mark.parametrize("late_ms", [0, 25_000, 3_600_000])
def test_a_triggered_fire_waits_at_the_cap_then_runs_as_it_is_however_late(
    misfire: str, late_ms: int
) -> None:
    """``rqbeat trigger`` marked fire T: at the cap it waits for a slot like any fire;
    once a slot frees it runs, T itself, nothing dropped -- whatever the misfire policy
    and however long the wait (a trigger is a request, not a fire the policy may drop)."""
    schedule = every_10s(misfire=misfire, catchup_window="15s")
    at_cap = decide("reports", row(schedule, 3, triggered=T_MS), T_MS, T_MS + late_ms)
    assert (at_cap.kind, at_cap.fire_ms, at_cap.dropped, at_cap.score_ms) == (
        Kind.RESCHEDULE,
        T_MS,
        0,
        WAIT_MS,
    )
    woken = decide("reports", row(schedule, 2, triggered=T_MS), T_MS, T_MS + late_ms)
    assert (woken.kind, woken.fire_ms, woken.dropped) == (Kind.SPAWN, T_MS, 0)
    assert woken.job_id == f"reports-{T_MS}-1"


def test_a_trigger_mark_of_another_fire_counts_for_nothing() -> None:
    """The mark names one fire: once ``fire_at`` moved past it, the policy decides again."""
    schedule = every_10s(misfire="skip")
    d = decide("reports", row(schedule, 2, triggered=T_MS - 10_000), T_MS, T_MS + 25_000)
    assert (d.kind, d.dropped) == (Kind.RESCHEDULE, 3)


def test_a_triggered_fire_of_a_single_run_schedule_runs_however_late() -> None:
    schedule = Schedule.from_dict(
        {"id": "reports", "target": "myapp.tasks.reports.daily_summary", "every": "10s", "misfire": "skip"}
    )
    d = decide("reports", row(schedule, None, triggered=T_MS), T_MS, T_MS + 25_000)
    assert (d.kind, d.fire_ms, d.dropped) == (Kind.RUN, T_MS, 0)
    plain = decide("reports", row(schedule, None), T_MS, T_MS + 25_000)
    assert (plain.kind, plain.dropped) == (Kind.RESCHEDULE, 3)


def test_catchup_window_drops_older_fires_before_the_misfire_policy() -> None:
    schedule = every_10s(misfire="all", catchup_window="15s")
    d = decide("reports", row(schedule, 0), T_MS, T_MS + 25_000)
    assert (d.kind, d.fire_ms, d.dropped) == (Kind.SPAWN, T_MS + 10_000, 1)


def test_the_last_fire_before_end_at_completes_the_schedule_after_its_spawn() -> None:
    schedule = every_10s(start_at=iso(T_MS - 60_000), end_at=iso(T_MS + 5_000))
    d = decide("reports", row(schedule, 0), T_MS, T_MS)
    assert (d.kind, d.fire_ms) == (Kind.SPAWN, T_MS)
    assert d.next_ms >= windows.NEVER_MS


@pytest.mark.parametrize(
    ("cap", "in_flight", "has_slot"),
    [(1, 0, True), (1, 1, False), (3, 2, True), (3, 3, False), (3, 4, False), (1000, 999, True)],
)
def test_resolve_concurrent_cap(cap: int, in_flight: int, has_slot: bool) -> None:
    res = policy.resolve_concurrent(every_10s(max_concurrent=cap), T_MS, T_MS, in_flight)
    assert (res is not None) is has_slot


@pytest.mark.parametrize(
    ("settings", "field", "reason"),
    [
        ({"max_concurrent": None}, "max_concurrent", "is required with overlap = allow_all"),
        ({"max_concurrent": 0}, "max_concurrent", "must be from 1 to 1000"),
        ({"max_concurrent": 1001}, "max_concurrent", "must be from 1 to 1000"),
        ({"max_concurrent": "two"}, "max_concurrent", "must be a whole number"),
        ({"max_concurrent": True}, "max_concurrent", "must be a whole number"),
        ({"overlap": "skip"}, "max_concurrent", "needs overlap = allow_all"),
        ({"overlap": "buffer_all"}, "max_concurrent", "needs overlap = allow_all"),
        ({"max_runs": 5}, "max_runs", "cannot be combined with overlap = allow_all"),
    ],
)
def test_refused_settings_name_the_field(settings: dict[str, Any], field: str, reason: str) -> None:
    base = {"id": "reports", "target": "myapp.tasks.reports.daily_summary", "every": "10s"}
    raw = {**base, "overlap": "allow_all", "max_concurrent": 2, **settings}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(InvalidSchedule, match=rf"^{field}: {reason}"):
        Schedule.from_dict({**base, **raw})


def test_leaving_allow_all_by_an_edit_drops_its_cap() -> None:
    edited = every_10s().edited({"overlap": "buffer_one"})
    assert (edited.overlap, edited.max_concurrent) == ("buffer_one", None)
    assert every_10s().edited({"max_concurrent": 7}).max_concurrent == 7


def test_the_cap_is_stored_with_the_policy() -> None:
    stored = every_10s().stored_settings()
    assert (stored["overlap"], stored["max_concurrent"]) == ("allow_all", 3)


def test_cap_field_is_the_setting() -> None:
    assert CAP_FIELD in SETTING_FIELDS
