"""The chaos audit on hand-made observations: each verdict, and that it can fail."""

from __future__ import annotations

from collections.abc import Sequence

from devtools.chaos.audit import Entry, Fault, FinalState, Observed, audit
from devtools.chaos.jobs import SKEW_ENV, RunRecord
from devtools.skewclock.sitecustomize import OFFSET_ENV
from scheduler import Schedule

T0 = 1_700_000_000_000  # a whole second, so every-1s fires are T0 + k * 1000
EVERY = Schedule(id="tick", target="devtools.chaos.jobs.work", every_ms=1000)


def ran(
    fire: int, *, at: int | None = None, worker: str = "w0", attempt: int = 1, ok: bool = True
) -> RunRecord:
    return RunRecord(
        key=f"tick:{fire}",
        schedule="tick",
        fire_ms=fire,
        attempt=attempt,
        job_id=f"tick-{fire}-{attempt}",
        worker=worker,
        ok=ok,
        at_ms=at if at is not None else fire + 50,
        started_ms=(at if at is not None else fire + 50) - 40,
    )


def dispatched(fire: int, lag: int = 20, epoch: int = 1) -> Entry:
    return Entry(fire + lag, "dispatched", {"fire_ms": str(fire), "attempt": "1", "epoch": str(epoch)})


def observe(
    runs: Sequence[RunRecord],
    history: Sequence[Entry] = (),
    *,
    schedule: Schedule = EVERY,
    faults: Sequence[Fault] = (),
    final: FinalState | None = None,
    until: int = T0 + 5000,
) -> Observed:
    return Observed(
        schedules=[schedule],
        start_ms=T0,
        due_until_ms=until,
        now_ms=until + 2000,
        history={schedule.id: list(history)},
        runs=list(runs),
        faults=list(faults),
        finals={schedule.id: final or FinalState("due", due_ms=until + 3000)},
    )


def test_every_fire_ran_once_is_clean() -> None:
    fires = [T0 + k * 1000 for k in range(1, 6)]
    report = audit(observe([ran(f) for f in fires], [dispatched(f, lag=k * 10) for k, f in enumerate(fires)]))
    assert report.ok, report.problems()
    assert (report.due, report.ran, report.runs_ok) == (5, 5, 5)
    assert report.lag(1.0) == 40 and report.lag(0.5) == 20
    assert report.epochs == [1]


def test_a_fire_that_never_ran_is_lost() -> None:
    report = audit(observe([ran(T0 + k * 1000) for k in (1, 2, 4, 5)]))
    assert not report.ok
    assert report.lost == [("tick", T0 + 3000)]


def test_a_failed_run_alone_does_not_count_as_run() -> None:
    runs = [ran(T0 + k * 1000) for k in (1, 2, 4, 5)] + [ran(T0 + 3000, ok=False)]
    report = audit(observe(runs))
    assert report.lost == [("tick", T0 + 3000)]
    assert report.runs_failed == 1


def test_coalesced_fires_named_by_a_missed_entry_are_dropped_by_policy() -> None:
    # Down from 2 s to 4.5 s: at 4.5 s one run stands for fires 2, 3 and 4.
    missed = Entry(T0 + 4500, "missed", {"count": "2", "fire_ms": str(T0 + 4000)})
    runs = [ran(T0 + k * 1000) for k in (1, 4, 5)]
    report = audit(observe(runs, [missed]))
    assert report.ok, report.problems()
    assert report.dropped["misfire:coalesce"] == 2 and report.ran == 3


def test_a_drop_the_policy_does_not_allow_is_reported() -> None:
    every_all = Schedule(id="tick", target="devtools.chaos.jobs.work", every_ms=1000, misfire="all")  # type: ignore[arg-type]
    missed = Entry(T0 + 4500, "missed", {"count": "2", "fire_ms": str(T0 + 4000)})
    report = audit(observe([ran(T0 + k * 1000) for k in (1, 4, 5)], [missed], schedule=every_all))
    assert not report.ok
    assert report.bad_drops and "policy all" in report.bad_drops[0]


def test_a_drop_of_a_fire_not_yet_missed_is_reported() -> None:
    # Fire 3 is dropped at 3.2 s: within the 1 s grace, so it was not a misfire.
    missed = Entry(T0 + 3200, "missed", {"count": "1", "next_fire_ms": str(T0 + 4000)})
    skip = Schedule(id="tick", target="devtools.chaos.jobs.work", every_ms=1000, misfire="skip")  # type: ignore[arg-type]
    report = audit(observe([ran(T0 + k * 1000) for k in (1, 2, 4, 5)], [missed], schedule=skip))
    assert report.bad_drops and "grace" in report.bad_drops[0]


def test_give_up_needs_max_attempts() -> None:
    gave_up = Entry(T0 + 3900, "gave_up", {"fire_ms": str(T0 + 3000), "job_id": f"tick-{T0 + 3000}-2"})
    runs = [ran(T0 + k * 1000) for k in (1, 2, 4, 5)]
    limited = Schedule(id="tick", target="devtools.chaos.jobs.work", every_ms=1000, max_attempts=2)
    assert audit(observe(runs, [gave_up], schedule=limited)).ok
    report = audit(observe(runs, [gave_up]))
    assert report.bad_drops == ["tick: gave up after attempt 2"]


def test_fires_while_paused_on_failure_are_dropped_until_the_resume() -> None:
    pof = Schedule(id="tick", target="devtools.chaos.jobs.work", every_ms=1000, pause_on_failure=True)
    paused = Entry(T0 + 2100, "failed", {"fire_ms": str(T0 + 2000), "retry_at": ""})
    resumed = Entry(T0 + 3500, "resumed", {})
    runs = [ran(T0 + k * 1000) for k in (1, 4, 5)] + [ran(T0 + 2000, ok=False)]
    report = audit(observe(runs, [paused, resumed], schedule=pof))
    assert report.ok, report.problems()
    assert report.dropped["paused"] == 2
    assert not audit(observe(runs, [paused, resumed])).ok  # without pause_on_failure


def test_duplicate_explained_by_a_worker_killed_before_the_ack() -> None:
    fires = [T0 + k * 1000 for k in range(1, 6)]
    runs = [ran(f) for f in fires] + [ran(T0 + 3000, at=T0 + 9000, worker="w1-1", attempt=2)]
    kill = Fault("worker-kill", "w0", T0 + 3100, T0 + 3200)
    report = audit(observe(runs, faults=[kill]))
    assert report.ok, report.problems()
    [dup] = report.duplicates
    assert dup.key == f"tick:{T0 + 3000}"
    assert dup.explanation and "worker w0 killed 50 ms after it recorded its run" in dup.explanation


def test_duplicate_without_a_fault_fails_the_run() -> None:
    fires = [T0 + k * 1000 for k in range(1, 6)]
    runs = [ran(f) for f in fires] + [ran(T0 + 3000, at=T0 + 9000, worker="w1")]
    other_worker = Fault("worker-kill", "w2", T0 + 3100, T0 + 3200)
    stop = Fault("leader-stop", "a1", T0 + 3100, T0 + 6000)
    report = audit(observe(runs, faults=[other_worker, stop]))
    assert not report.ok
    assert [d.key for d in report.unexplained] == [f"tick:{T0 + 3000}"]


def test_a_run_of_a_fire_the_trigger_never_had_is_a_stray() -> None:
    runs = [ran(T0 + k * 1000) for k in range(1, 6)] + [ran(T0 + 2500)]
    report = audit(observe(runs))
    assert report.strays == [f"tick:{T0 + 2500} (job tick-{T0 + 2500}-1)"]


def test_stuck_schedules() -> None:
    runs = [ran(T0 + k * 1000) for k in range(1, 6)]
    overdue = FinalState("due", due_ms=T0 - 120_000)
    assert audit(observe(runs, final=overdue)).stuck == ["tick: due since 127000 ms"]
    hung = FinalState("running", dispatched_ms=T0 - 120_000)
    assert audit(observe(runs, final=hung)).stuck == ["tick: a run in flight for too long"]
    assert audit(observe(runs, final=FinalState("broken"))).stuck == ["tick: state broken"]
    assert audit(observe(runs, final=FinalState("paused"))).stuck
    assert audit(observe(runs, final=FinalState("running", dispatched_ms=T0 + 6000))).ok


def test_duplicate_explained_by_a_redis_outage_while_the_run_was_in_flight() -> None:
    # Redis down from 3.0 s to 4.5 s while run 1 (started 3.01 s) was in flight: its
    # heartbeat lapsed, the watchdog judged it abandoned and dispatched attempt 2.
    fires = [T0 + k * 1000 for k in range(1, 6)]
    runs = [ran(f) for f in fires] + [ran(T0 + 3000, at=T0 + 9000, worker="w1", attempt=2)]
    outage = Fault("redis-kill", "redis", T0 + 2900, T0 + 4500)
    report = audit(observe(runs, faults=[outage]))
    assert report.ok, report.problems()
    [dup] = report.duplicates
    assert dup.explanation and "Redis down 1600 ms while it ran" in dup.explanation
    long_before = Fault("redis-kill", "redis", T0 - 9000, T0 - 8000)
    assert not audit(observe(runs, faults=[long_before])).ok


def test_fires_a_resume_skipped_are_dropped_as_skipped() -> None:
    # Paused at 1.5 s, resumed at 3.5 s: fires 2 and 3 never run; the resume records them.
    skipped = Entry(T0 + 3500, "skipped", {"count": "2", "fire_ms": str(T0 + 2000)})
    runs = [ran(T0 + k * 1000) for k in (1, 4, 5)]
    report = audit(observe(runs, [Entry(T0 + 1500, "paused"), skipped, Entry(T0 + 3500, "resumed")]))
    assert report.ok, report.problems()
    assert report.dropped["skipped"] == 2
    assert ("tick", T0 + 2000, "skipped") in report.outcomes


def test_a_skip_of_fires_after_the_resume_is_a_bad_drop() -> None:
    skipped = Entry(T0 + 2500, "skipped", {"count": "3", "fire_ms": str(T0 + 2000)})
    report = audit(observe([ran(T0 + k * 1000) for k in (1, 5)], [skipped]))
    assert report.bad_drops == [f"tick: skipped fire {T0 + 4000} after the resume at {T0 + 2500}"]


def test_fires_paused_without_a_record_are_lost() -> None:
    report = audit(observe([ran(T0 + k * 1000) for k in (1, 4, 5)], [Entry(T0 + 1500, "paused")]))
    assert report.lost == [("tick", T0 + 2000), ("tick", T0 + 3000)]


def test_a_triggered_run_is_counted_not_a_stray() -> None:
    runs = [ran(T0 + k * 1000) for k in range(1, 6)] + [ran(T0 + 2345)]
    report = audit(observe(runs, [Entry(T0 + 2345, "triggered")]))
    assert report.ok, report.problems()
    assert (report.triggered, report.due) == (1, 5)


def test_fires_pending_at_a_reported_wipe_are_lost_to_data_loss() -> None:
    # Redis wiped at 2.5 s (fire 2 ran before), schedules re-applied at 4.2 s: fires 3
    # and 4 vanished with it; fire 5 runs again.
    wipe = Fault("redis-wipe", "redis", T0 + 2500, T0 + 4200, reported=True)
    runs = [ran(T0 + k * 1000) for k in (1, 2, 5)]
    report = audit(observe(runs, faults=[wipe]))
    assert report.ok, report.problems()
    assert (report.ran, report.lost_to_data_loss) == (3, 2)
    assert ("tick", T0 + 3000, "data_loss") in report.outcomes


def test_a_wipe_excuses_nothing_unless_reported_and_nothing_before_it() -> None:
    silent = Fault("redis-wipe", "redis", T0 + 2500, T0 + 4200, reported=False)
    runs = [ran(T0 + k * 1000) for k in (1, 2, 5)]
    assert audit(observe(runs, faults=[silent])).lost == [("tick", T0 + 3000), ("tick", T0 + 4000)]
    # Fire 2 was lost before fire 3 ran: a wipe after that does not explain it.
    wipe = Fault("redis-wipe", "redis", T0 + 3600, T0 + 4200, reported=True)
    report = audit(observe([ran(T0 + k * 1000) for k in (1, 3, 5)], faults=[wipe]))
    assert report.lost == [("tick", T0 + 2000)]
    assert report.lost_to_data_loss == 1


def test_duplicate_explained_by_redis_full_before_the_ack() -> None:
    fires = [T0 + k * 1000 for k in range(1, 6)]
    runs = [ran(f) for f in fires] + [ran(T0 + 3000, at=T0 + 9000, worker="w1", attempt=2)]
    full = Fault("maxmemory", "redis", T0 + 3060, T0 + 7000)
    report = audit(observe(runs, faults=[full]))
    assert report.ok, report.problems()
    [dup] = report.duplicates
    assert dup.explanation and "Redis full 10 ms after it recorded its run" in dup.explanation


def test_skewed_clocks_and_storms_explain_no_duplicate() -> None:
    fires = [T0 + k * 1000 for k in range(1, 6)]
    runs = [ran(f) for f in fires] + [ran(T0 + 3000, at=T0 + 9000, worker="w1", attempt=2)]
    harmless = [
        Fault(kind, "w0", T0 + 2000, T0 + 9500)
        for kind in ("worker-skew", "replica-skew", "edit-storm", "overload")
    ]
    assert [d.key for d in audit(observe(runs, faults=harmless)).unexplained] == [f"tick:{T0 + 3000}"]


def test_the_job_spells_skewclocks_variable_the_same() -> None:
    assert SKEW_ENV == OFFSET_ENV


def test_two_runs_of_one_schedule_at_once_are_an_overlap() -> None:
    runs = [ran(T0 + k * 1000) for k in range(1, 6)]
    assert audit(observe(runs)).overlaps == []
    slow = RunRecord(
        key=f"tick:{T0 + 2000}",
        schedule="tick",
        fire_ms=T0 + 2000,
        attempt=1,
        job_id=f"tick-{T0 + 2000}-1",
        worker="w0",
        ok=True,
        at_ms=T0 + 3100,  # still running when fire 3's run started (3.01 s)
        started_ms=T0 + 2010,
    )
    report = audit(observe([r for r in runs if r.fire_ms != T0 + 2000] + [slow]))
    assert not report.ok
    assert report.overlaps == [
        f"tick: tick-{T0 + 3000}-1 on w0 started 90 ms before tick-{T0 + 2000}-1 on w0 ended"
    ]


def test_an_overlap_with_a_run_a_reported_wipe_forgot_is_counted_apart() -> None:
    # Run of fire 2 in flight (2.01-3.2 s) when Redis lost its data at 2.5 s; re-applied
    # at 2.9 s, the schedule ran fire 3 at 3.01 s, knowing nothing of the earlier run.
    slow = RunRecord(
        key=f"tick:{T0 + 2000}",
        schedule="tick",
        fire_ms=T0 + 2000,
        attempt=1,
        job_id=f"tick-{T0 + 2000}-1",
        worker="w0",
        ok=True,
        at_ms=T0 + 3200,
        started_ms=T0 + 2010,
    )
    runs = [ran(T0 + k * 1000) for k in (1, 3, 4, 5)] + [slow]
    wipe = Fault("redis-wipe", "redis", T0 + 2500, T0 + 2900, reported=True)
    report = audit(observe(runs, faults=[wipe]))
    assert report.ok, report.problems()
    assert len(report.overlaps_across_loss) == 1
    unreported = Fault("redis-wipe", "redis", T0 + 2500, T0 + 2900)
    assert len(audit(observe(runs, faults=[unreported])).overlaps) == 1


def test_a_trigger_that_ran_the_pending_fire_names_it() -> None:
    # A trigger at 3.5 s while fire 3 waited for its retry: fire 3 ran (attempt 2).
    runs = [ran(T0 + k * 1000) for k in (1, 2, 4, 5)] + [ran(T0 + 3000, at=T0 + 3600, attempt=2)]
    trig = Entry(T0 + 3500, "triggered", {"fire_ms": str(T0 + 3000)})
    report = audit(observe(runs, [trig]))
    assert report.ok, report.problems()
    assert (report.ran, report.triggered) == (5, 0)
