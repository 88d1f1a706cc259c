"""The engine's pure decisions, without Redis: what dispatch does with one due
schedule (``dispatch.decide``), what the watchdog makes of RQ's state
(``watchdog.judge``, ``next_check_ms``) and what an ack re-arms (``runs.prepare_ack``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import policy
from scheduler.clock import iso
from scheduler.engine.decide import Decision, decide
from scheduler.engine.runs import ACK_STATS_AT, MAX_ERROR_CHARS, InFlight, prepare_ack
from scheduler.engine.watchdog import MAX_CHECK_MS, MIN_CHECK_MS, ORPHAN_GRACE_MS, judge, next_check_ms
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.model import Misfire, Schedule
from scheduler.protocol import DUE_FIELDS, AckOutcome
from scheduler.thresholds import MIN_STALE_AFTER_MS

#: A whole second (and a whole 5 minutes) far from any epoch edge.
T_MS = 1_800_000_000_000
SID = "sched-1"


def every_second(**changes: Any) -> Schedule:
    values: dict[str, Any] = {"id": SID, "target": "tests.jobs.record", "every_ms": 1000, **changes}
    return Schedule(**values)


def row(
    schedule: Schedule | str | None = None,
    *,
    version: str | None = "3",
    state: str | None = "due",
    fire_at: str | None = None,
    attempt: str | None = "1",
    last_run_at: str | None = None,
) -> list[bytes | None]:
    """An HMGET reply of ``protocol.DUE_FIELDS``, bytes as Redis sends them."""
    definition = schedule.to_json() if isinstance(schedule, Schedule) else schedule
    values = [definition, version, state, fire_at, attempt, last_run_at]
    values += [None] * (len(DUE_FIELDS) - len(values))  # no runs in flight, no trigger, legacy form
    return [None if v is None else v.encode() for v in values]


def decide_at(schedule: Schedule, fire_ms: int, now_ms: int, attempt: int = 1) -> Decision:
    return decide(SID, row(schedule, fire_at=iso(fire_ms), attempt=str(attempt)), fire_ms, now_ms)


# -- dispatch.decide: damage --------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "needle"),
    [
        ("{garbage", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"text"', "not a JSON object"),
        (None, "no 'definition'"),
        ('{"id": "sched-1", "target": "a.b", "every": "0s"}', "every"),
        ('{"id": "sched-1", "target": "a.b"}', "cron"),
        ('{"id": "sched-1", "target": "a.b", "every": "1s", "colour": "red"}', "colour"),
        ('{"id": "other", "target": "a.b", "every": "1s"}', "does not match the key"),
    ],
)
def test_undecodable_definition_is_broken(definition: str | None, needle: str) -> None:
    d = decide(SID, row(definition, fire_at=iso(T_MS)), T_MS, T_MS)
    assert d.kind == "broken"
    assert d.schedule is None
    assert needle in d.error


@pytest.mark.parametrize("state", ["running", "paused", "broken", "", None, "due "])
def test_due_member_in_another_state_is_broken(state: str | None) -> None:
    d = decide(SID, row(every_second(), state=state, fire_at=iso(T_MS)), T_MS, T_MS)
    assert d.kind == "broken"
    assert "state" in d.error
    assert repr(state) in d.error


@pytest.mark.parametrize(
    ("fire_at", "attempt"),
    [("yesterday", "1"), ("2027-01-01T00:00:00", "1"), (iso(T_MS), "two"), (iso(T_MS), "1.5")],
)
def test_unreadable_state_fields_are_broken(fire_at: str, attempt: str) -> None:
    d = decide(SID, row(every_second(), fire_at=fire_at, attempt=attempt), T_MS, T_MS)
    assert d.kind == "broken"
    assert d.error


# -- dispatch.decide: the recompute marker -------------------------------------------


@pytest.mark.parametrize("fire_at", ["", None])
def test_recompute_marker_takes_the_next_fire_after_the_score(fire_at: str | None) -> None:
    """``fire_at ''`` (an ack saw the definition change) or a missing fire: the fire is
    the new trigger's first fire after the due score, never run before its time."""
    schedule = every_second(every_ms=5000)
    score = T_MS + 1_234
    d = decide(SID, row(schedule, fire_at=fire_at), score, score)
    assert d.kind == "reschedule"
    assert (d.fire_ms, d.score_ms, d.dropped, d.attempt) == (T_MS + 5000, T_MS + 5000, 0, 1)


def test_recompute_marker_after_a_long_wait_follows_the_misfire_policy() -> None:
    schedule = every_second(misfire="coalesce")
    d = decide(SID, row(schedule, fire_at=""), T_MS, T_MS + 10_500)
    assert d.kind == "run"
    assert (d.fire_ms, d.dropped) == (T_MS + 10_000, 9)


# -- dispatch.decide: runs, retries, misfires ----------------------------------------


def test_on_time_fire_runs() -> None:
    d = decide_at(every_second(), T_MS, T_MS + 3)
    assert (d.kind, d.fire_ms, d.attempt, d.dropped, d.version) == ("run", T_MS, 1, 0, "3")
    assert d.job_id == f"{SID}-{T_MS}-1"
    assert d.schedule == every_second()


def test_lag_within_the_grace_is_not_a_misfire() -> None:
    for schedule in (every_second(misfire=m) for m in Misfire):
        d = decide_at(schedule, T_MS, T_MS + policy.MISFIRE_GRACE_MS - 1)
        assert (d.kind, d.fire_ms, d.dropped) == ("run", T_MS, 0), schedule.misfire


def test_a_fire_not_yet_reached_waits_for_its_time() -> None:
    d = decide_at(every_second(), T_MS + 1000, T_MS)
    assert (d.kind, d.fire_ms, d.score_ms, d.dropped) == ("reschedule", T_MS + 1000, T_MS + 1000, 0)


@pytest.mark.parametrize("misfire", list(Misfire))
@pytest.mark.parametrize("window_ms", [None, 1000])
def test_retries_are_never_dropped(misfire: Misfire, window_ms: int | None) -> None:
    """A retry stands for a fire that already failed: no misfire policy or catch-up
    window may drop it, however late it is."""
    schedule = every_second(misfire=misfire, catchup_window_ms=window_ms)
    d = decide_at(schedule, T_MS, T_MS + 600_000, attempt=3)
    assert (d.kind, d.fire_ms, d.attempt, d.dropped) == ("run", T_MS, 3, 0)
    assert d.job_id == f"{SID}-{T_MS}-3"


#: fire T, now T + 5.3 s: fires T .. T+5 s (6 of them) were missed
MISSED_NOW = T_MS + 5_300


@pytest.mark.parametrize(
    ("changes", "kind", "fire_ms", "dropped"),
    [
        ({"misfire": "coalesce"}, "run", T_MS + 5000, 5),
        ({"misfire": "all"}, "run", T_MS, 0),
        ({"misfire": "skip"}, "reschedule", T_MS + 6000, 6),
        ({"misfire": "all", "catchup_window_ms": 2000}, "run", T_MS + 4000, 4),
        ({"misfire": "coalesce", "catchup_window_ms": 2000}, "run", T_MS + 5000, 5),
        ({"misfire": "skip", "catchup_window_ms": 2000}, "reschedule", T_MS + 6000, 6),
        ({"misfire": "all", "catchup_window_ms": 200}, "reschedule", T_MS + 6000, 6),
    ],
)
def test_misfire_decisions(changes: dict[str, Any], kind: str, fire_ms: int, dropped: int) -> None:
    d = decide_at(every_second(**changes), T_MS, MISSED_NOW)
    assert (d.kind, d.fire_ms, d.dropped, d.attempt) == (kind, fire_ms, dropped, 1)
    if kind == "reschedule":
        assert d.score_ms == fire_ms > MISSED_NOW


def test_skip_reschedule_keeps_the_jitter_of_the_next_fire() -> None:
    schedule = every_second(every_ms=10_000, misfire="skip", jitter_ms=4000)
    d = decide_at(schedule, T_MS, T_MS + 25_000)
    assert (d.kind, d.fire_ms, d.dropped) == ("reschedule", T_MS + 30_000, 3)
    assert d.score_ms == policy.due_score_ms(schedule, T_MS + 30_000)
    assert T_MS + 30_000 <= d.score_ms <= T_MS + 34_000


# -- watchdog.judge --------------------------------------------------------------------


def test_judge_a_queued_job_in_no_list_is_lost_only_after_the_grace() -> None:
    assert judge("queued", False, T_MS).outcome == "pending"  # in its queue
    assert judge("queued", False, T_MS, unlisted_since_ms=T_MS).outcome == "pending"  # first seen so
    almost = judge("queued", False, T_MS + ORPHAN_GRACE_MS - 1, unlisted_since_ms=T_MS)
    assert almost.outcome == "pending"  # a worker may be between its pop and marking it started
    verdict = judge("queued", False, T_MS + ORPHAN_GRACE_MS, unlisted_since_ms=T_MS)
    assert verdict.outcome == "failed"
    assert "died before starting it" in verdict.reason
    # only a queued job can be orphaned that way
    assert judge("finished", False, T_MS + 10**6, unlisted_since_ms=T_MS).outcome == "succeeded"


def test_judge_gone_job_is_lost() -> None:
    verdict = judge(None, False, T_MS)
    assert verdict.outcome == "failed"
    assert verdict.reason.startswith("lost")


@pytest.mark.parametrize("alive", [False, True])
def test_judge_finished_succeeds_whatever_the_heartbeat(alive: bool) -> None:
    assert judge("finished", alive, T_MS).outcome == "succeeded"


@pytest.mark.parametrize("status", ["failed", "stopped", "canceled"])
def test_judge_failed_states(status: str) -> None:
    verdict = judge(status, False, T_MS)
    assert verdict.outcome == "failed"
    assert status in verdict.reason


def test_judge_failed_while_an_execution_is_alive_waits_for_the_worker() -> None:
    """RQ's registry clean-up, on a clock other than the worker's, marks a running job
    failed; the worker's execution (expired by Redis's clock) says it still runs."""
    assert judge("failed", True, T_MS).outcome == "pending"
    assert judge("stopped", True, T_MS).outcome == "failed"  # a stop is the worker's own verdict


def test_judge_started_without_a_live_execution_is_abandoned() -> None:
    verdict = judge("started", False, T_MS)
    assert verdict.outcome == "failed"
    assert verdict.reason.startswith("abandoned")


def test_judge_started_with_a_live_execution_is_pending_at_any_time() -> None:
    # no clock is involved: liveness is the execution key's Redis TTL
    for now_ms in (0, T_MS, T_MS + 10**9):
        assert judge("started", True, now_ms).outcome == "pending"


@pytest.mark.parametrize("status", ["queued", "deferred", "scheduled"])
def test_judge_waiting_states_are_pending(status: str) -> None:
    assert judge(status, False, T_MS).outcome == "pending"


@pytest.mark.parametrize(
    ("age_ms", "wait_ms"),
    [
        (-5_000, MIN_CHECK_MS),  # dispatched "in the future" (clock step): still bounded
        (0, MIN_CHECK_MS),
        (999, MIN_CHECK_MS),
        (1_000, MIN_CHECK_MS),
        (1_002, 501),
        (10_000, 5_000),
        (60_000, MAX_CHECK_MS),
        (86_400_000, MAX_CHECK_MS),
    ],
)
def test_next_check_grows_with_the_age_of_the_run(age_ms: int, wait_ms: int) -> None:
    assert next_check_ms(T_MS - age_ms, T_MS) == T_MS + wait_ms


@given(st.integers(-(10**9), 10**12), st.integers(0, 10**13))
def test_next_check_is_always_within_bounds(age_ms: int, now_ms: int) -> None:
    wait = next_check_ms(now_ms - age_ms, now_ms) - now_ms
    assert MIN_CHECK_MS <= wait <= MAX_CHECK_MS


# -- runs.prepare_ack ------------------------------------------------------------------

K = Keys("ns")


def in_flight(schedule: Schedule, fire_ms: int = T_MS, attempt: int = 1) -> InFlight:
    return InFlight(SID, f"{SID}-{fire_ms}-{attempt}", fire_ms, attempt, "7", schedule, fire_ms)


def ack_args(schedule: Schedule, now_ms: int, **kwargs: Any) -> dict[str, Any]:
    ack = prepare_ack(K, in_flight(schedule), now_ms, **kwargs)
    assert ack.keys == [
        K.schedule(SID), K.due, K.running, K.history(SID), K.events, K.stats, K.queued, K.stale,
        K.alerts, K.failing, K.metered, K.succeeded(SID),
    ]  # fmt: skip
    names = [
        "id", "job_id", "version", "next_fire", "score", "now", "now_score",
        "outcome", "dropped", "maxlen", "error", "resumed_at", "stale_by",
        "started_at", "ended_at", "worker", "lateness_ms", "metered",
        "max_runs", "excluded", "first_excluded", "fire_ms", "expect_ms",
    ]  # fmt: skip
    assert len(names) == ACK_STATS_AT
    # after the named arguments: (field, increment) pairs for the stats hash
    assert len(ack.args) >= len(names) and (len(ack.args) - len(names)) % 2 == 0
    return dict(zip(names, ack.args[: len(names)], strict=True))


def stats_increments(schedule: Schedule, now_ms: int, **kwargs: Any) -> dict[str, int]:
    args = prepare_ack(K, in_flight(schedule), now_ms, **kwargs).args[ACK_STATS_AT:]
    return dict(zip(args[::2], args[1::2], strict=True))


def test_ack_counts_itself_with_its_latency_from_the_job_end() -> None:
    stats = stats_increments(every_second(), T_MS + 200, by="watchdog", ended_ms=T_MS + 197)
    assert stats == {"acks_total:watchdog": 1, "ack_le:0.005": 1, "ack_sum_us": 3000}


def test_ack_without_a_job_end_counts_no_latency_and_a_late_one_its_drops() -> None:
    assert stats_increments(every_second(misfire="skip"), T_MS + 5_500) == {
        "acks_total:worker": 1,
        "ack_missed_total": 5,
    }


def test_giving_up_is_not_an_ack() -> None:
    assert stats_increments(every_second(), T_MS + 200, outcome=AckOutcome.GAVE_UP, ended_ms=T_MS) == {}


def test_ack_on_time_arms_the_next_fire() -> None:
    args = ack_args(every_second(), T_MS + 200)
    assert args == {
        "id": SID,
        "job_id": f"{SID}-{T_MS}-1",
        "version": "7",
        "next_fire": iso(T_MS + 1000),
        "score": (T_MS + 1000) / 1000,
        "now": iso(T_MS + 200),
        "now_score": (T_MS + 200) / 1000,
        "outcome": "succeeded",
        "dropped": 0,
        "maxlen": HISTORY_MAXLEN,
        "error": "",
        "resumed_at": "",
        "stale_by": (T_MS + 200 + MIN_STALE_AFTER_MS) / 1000,  # every second: the 5 min floor
        # a plain rq worker's run: no start known; a worker's ack ends it at its own time
        "started_at": "",
        "ended_at": iso(T_MS + 200),
        "worker": "",
        "lateness_ms": "",
        "metered": "0",
        # no max_runs, no exclusions
        "max_runs": "",
        "excluded": 0,
        "first_excluded": "",
        # the succeeded record (what a backfill skips) chains this fire to the next
        "fire_ms": T_MS,
        "expect_ms": T_MS + 1000,
    }


def test_a_started_run_carries_its_times_its_lateness_and_counts_it() -> None:
    run = dataclasses.replace(in_flight(every_second()), started_ms=T_MS + 40, worker="w1")
    ack = prepare_ack(K, run, T_MS + 200)
    assert ack.args[13:18] == [iso(T_MS + 40), iso(T_MS + 200), "w1", 40, "0"]
    stats = dict(zip(ack.args[ACK_STATS_AT::2], ack.args[ACK_STATS_AT + 1 :: 2], strict=True))
    assert stats["late_le:0.05"] == 1 and stats["late_sum_us"] == 40_000
    by_watchdog = prepare_ack(K, dataclasses.replace(run, ended_ms=T_MS + 150), T_MS + 900, by="watchdog")
    assert by_watchdog.args[14] == iso(T_MS + 150)  # the end the worker recorded, not the look


@pytest.mark.parametrize(
    ("changes", "fire_ms", "dropped"),
    [
        # the run of T ended at T+5.5 s: fires T+1 .. T+5 s passed while it was in flight
        ({"misfire": "coalesce"}, T_MS + 5000, 4),
        ({"misfire": "all"}, T_MS + 1000, 0),
        ({"misfire": "skip"}, T_MS + 6000, 5),
        ({"misfire": "all", "catchup_window_ms": 2000}, T_MS + 4000, 3),
        ({"misfire": "skip", "jitter_ms": 300}, T_MS + 6000, 5),
    ],
)
def test_late_ack_applies_the_misfire_policy_at_now(
    changes: dict[str, Any], fire_ms: int, dropped: int
) -> None:
    schedule = every_second(**changes)
    args = ack_args(schedule, T_MS + 5_500)
    assert (args["next_fire"], args["dropped"]) == (iso(fire_ms), dropped)
    assert args["score"] == policy.due_score_ms(schedule, fire_ms) / 1000
    assert fire_ms <= args["score"] * 1000 < fire_ms + 1000


@pytest.mark.parametrize("misfire", ["coalesce", "all", "skip"])
def test_ack_after_a_resume_never_arms_a_fire_from_the_pause(misfire: str) -> None:
    # paused while the run of T was in flight, resumed at T+4.5 s, acked at T+6.5 s:
    # T+1 .. T+4 s passed while paused (the resume recorded them as skipped); T+5 and
    # T+6 s passed after the resume, while the run was still in flight: the policy decides
    schedule = every_second(misfire=misfire)
    run = dataclasses.replace(in_flight(schedule), resumed_at=iso(T_MS + 4_500))
    args = prepare_ack(K, run, T_MS + 6_500).args
    expected = {"coalesce": (T_MS + 6000, 1), "all": (T_MS + 5000, 0), "skip": (T_MS + 7000, 2)}[misfire]
    assert (args[3], args[8]) == (iso(expected[0]), expected[1])
    assert args[11] == iso(T_MS + 4_500)  # what the script re-checks


def test_an_old_resume_does_not_move_the_next_fire() -> None:
    run = dataclasses.replace(in_flight(every_second()), resumed_at=iso(T_MS - 60_000))
    assert prepare_ack(K, run, T_MS + 200).args[3] == iso(T_MS + 1000)


@pytest.mark.parametrize(
    ("first_ms", "resumed_ms", "skipped"),
    [
        (None, T_MS, 0),  # nothing known to be pending
        (T_MS + 1, T_MS, 0),  # the pending fire is still ahead
        (T_MS, T_MS, 1),  # the pending fire is now
        (T_MS - 3000, T_MS + 500, 4),  # T-3 .. T s
    ],
)
def test_paused_fires_counts_the_pending_fire_and_those_up_to_the_resume(
    first_ms: int | None, resumed_ms: int, skipped: int
) -> None:
    assert policy.paused_fires(every_second().trigger, first_ms, resumed_ms) == skipped


def test_ack_of_a_cron_schedule() -> None:
    schedule = Schedule(id=SID, target="tests.jobs.record", cron="*/5 * * * *")
    args = ack_args(schedule, T_MS + 10_000)
    assert args["next_fire"] == iso(T_MS + 300_000)
    assert args["dropped"] == 0


def test_gave_up_ack_carries_a_truncated_error() -> None:
    args = ack_args(every_second(), T_MS + 100, outcome=AckOutcome.GAVE_UP, error="x" * 2000)
    assert args["outcome"] == "gave_up"
    assert args["error"] == "x" * MAX_ERROR_CHARS
    assert args["next_fire"] == iso(T_MS + 1000)
