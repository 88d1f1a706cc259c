"""The stall thresholds: pure math over a schedule and its period."""

from __future__ import annotations

import tomllib

import pytest

from scheduler.apply import parse_document
from scheduler.clock import parse_iso_ms
from scheduler.health import Finding, FindingKind, Health
from scheduler.model import Schedule
from scheduler.thresholds import (
    MIN_MAX_QUEUED_MS,
    MIN_STALE_AFTER_MS,
    STALE_PERIODS,
    Limits,
    limits,
    limits_at,
    period_ms,
)

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def sched(**values: object) -> Schedule:
    return Schedule.from_dict({"id": "s", "target": "app.jobs.run", **values})


@pytest.mark.parametrize(
    ("period", "queued", "stale"),
    [
        (1_000, MIN_MAX_QUEUED_MS, MIN_STALE_AFTER_MS),  # short periods: the floors
        (MINUTE, MINUTE, MIN_STALE_AFTER_MS),  # 3 minutes is under the 5-minute floor
        (2 * MINUTE, 2 * MINUTE, 6 * MINUTE),
        (DAY, DAY, STALE_PERIODS * DAY),
    ],
)
def test_defaults_scale_with_the_period_above_their_floors(period: int, queued: int, stale: int) -> None:
    assert limits(sched(every="1s"), period) == Limits(max_queued_ms=queued, stale_after_ms=stale)


def test_per_schedule_settings_override_the_defaults() -> None:
    schedule = sched(every="1d", max_queued="2s", stale_after="90s")
    assert limits(schedule, DAY) == Limits(max_queued_ms=2_000, stale_after_ms=90_000)
    only_queued = sched(every="1d", max_queued="2s")
    assert limits(only_queued, DAY) == Limits(max_queued_ms=2_000, stale_after_ms=3 * DAY)


def test_the_period_of_an_interval_is_its_interval() -> None:
    assert period_ms(sched(every="90s"), 123) == 90_000


def test_a_cron_period_is_measured_at_the_fire() -> None:
    weekdays = sched(cron="0 9 * * 1-5")
    friday = parse_iso_ms("2026-12-04T09:00:00Z")
    thursday = parse_iso_ms("2026-12-03T09:00:00Z")
    assert period_ms(weekdays, thursday) == DAY
    assert period_ms(weekdays, friday) == 3 * DAY  # to Monday
    assert limits_at(weekdays, friday).stale_after_ms == 9 * DAY


@pytest.mark.parametrize("key", ["max_queued", "stale_after"])
@pytest.mark.parametrize("value", ["0s", "-1s", "soon", True])
def test_thresholds_refuse_what_is_not_a_positive_duration(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        sched(every="1s", **{key: value})


def test_thresholds_round_trip_through_the_stored_form() -> None:
    schedule = sched(every="1m", max_queued="30s", stale_after="10m")
    assert schedule.to_dict()["max_queued"] == "30s"
    assert Schedule.from_dict(schedule.to_dict()) == schedule


def test_findings_read_as_lines_and_count_what_is_not_listed() -> None:
    queued = Finding(FindingKind.QUEUED_TOO_LONG, "run x queued for 5s", "a", queue="q", since_ms=0)
    no_worker = Finding(FindingKind.NO_WORKER, "no live worker listens on it", queue="q")
    counts = dict.fromkeys(FindingKind, 0) | {FindingKind.QUEUED_TOO_LONG: 3, FindingKind.NO_WORKER: 1}
    health = Health(0, [queued, no_worker], counts)
    assert not health.ok
    assert health.lines() == [
        "queued_too_long: schedule a: run x queued for 5s",
        "no_worker: queue q: no live worker listens on it",
        "queued_too_long: and 2 more",
    ]
    assert queued.to_json()["since"] == "1970-01-01T00:00:00.000Z"
    assert Health(0, [], dict.fromkeys(FindingKind, 0)).ok


def test_an_apply_file_sets_the_thresholds_per_schedule_and_in_defaults() -> None:
    document = tomllib.loads(
        """
        [defaults]
        target = "app.jobs.run"
        stale_after = "2h"

        [schedules.report]
        cron = "0 * * * *"
        max_queued = "5m"

        [schedules.ping]
        every = "30s"
        """
    )
    by_id = {s.id: s for s in parse_document(document, owner="apply:jobs")}
    assert (by_id["report"].max_queued_ms, by_id["report"].stale_after_ms) == (300_000, 7_200_000)
    assert (by_id["ping"].max_queued_ms, by_id["ping"].stale_after_ms) == (None, 7_200_000)
