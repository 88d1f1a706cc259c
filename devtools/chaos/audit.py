"""The chaos audit: a pure function from what a run observed to what went wrong.

Inputs (:class:`Observed`) are plain data collected during and after the run: the
schedules, every history entry, every run the jobs recorded, the faults the driver
injected, and each schedule's state at the end. :func:`audit` computes, per schedule:

* **due** — the trigger's fires in ``(start_ms, due_until_ms]``;
* **ran** — due fires with a successful recorded run;
* **dropped** — due fires, not run, that the contract lets go: named by a ``missed`` history entry
  (the ``count`` fires just before the fire it names) whose drop the misfire policy
  allows, given up after ``max_attempts`` (``gave_up``), passed while the schedule
  was paused by ``pause_on_failure``, or named by a ``skipped`` entry (the ``count``
  fires from its ``fire_at``: pending or passed while paused, dropped by the resume);
* **lost to data loss, reported** — due fires, not run, not dropped, from the first
  fire still pending when Redis lost its data (a ``redis-wipe`` fault) up to the end
  of that fault (the schedules re-applied), when ``rqbeat check`` reported the loss
  (``Fault.reported``);
* **lost** — due, never run successfully, not dropped. Any lost fire fails the run;
* **duplicates** — fires with more than one successful run; each needs a fault that
  explains it (a worker killed, or Redis killed, restarted, wiped or full, after the
  earlier run recorded its side effect and before the ack, or Redis unavailable while
  it ran so its heartbeat lapsed), or it fails the run;
* **triggered** — runs of the fire a ``triggered`` entry made (``rqbeat trigger``: fire
  = the trigger's time): counted, not strays, not due fires;
* **overlaps** — two runs of one schedule at once (one started before the other
  recorded its end): one in flight forbids it, whatever the fault, except a reported
  data loss that forgot the earlier run while it was in flight (counted apart);
* **stuck** — schedules whose state at the end is overdue, hung or broken.

Lags, leader epochs and counts are reported as figures.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from devtools.chaos.jobs import RunRecord
from scheduler import Schedule
from scheduler.cron import fires_between
from scheduler.model import Misfire
from scheduler.policy import MISFIRE_GRACE_MS

#: How far back of the window start the trigger fires are enumerated, so a drop that
#: names fires from just before the window can be placed.
_LOOKBACK_MS = 3_600_000
_MAX_FIRES = 200_000
#: The outcome of a due fire that Redis lost with its data, the loss reported.
DATA_LOSS = "data_loss"
RAN, LOST = "ran", "lost"
#: Faults during which Redis refused or lost writes: a run's ack may not have landed.
_REDIS_FAULTS = frozenset({"redis-kill", "redis-restart", "redis-wipe", "maxmemory"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One history entry: when (Redis time, ms), what, and its fields."""

    at_ms: int
    event: str
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault; ``target`` names the process or link (worker name, node)."""

    kind: str
    target: str
    start_ms: int
    end_ms: int
    #: redis-wipe: ``rqbeat check`` reported ``data_lost`` before the re-apply
    reported: bool = False


@dataclass(frozen=True, slots=True)
class FinalState:
    """A schedule at the end of the run."""

    state: str
    due_ms: int | None = None  # score in the due set
    dispatched_ms: int | None = None  # while a run is in flight


@dataclass(frozen=True, kw_only=True)
class Observed:
    schedules: Sequence[Schedule]
    start_ms: int
    due_until_ms: int
    now_ms: int
    history: Mapping[str, Sequence[Entry]]
    runs: Sequence[RunRecord]
    faults: Sequence[Fault] = ()
    finals: Mapping[str, FinalState] = field(default_factory=dict)
    #: a due schedule whose score is further than this in the past is stuck
    stuck_after_ms: int = 60_000
    history_gaps: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Duplicate:
    key: str
    runs: tuple[RunRecord, ...]
    explanation: str | None  # None: nothing explains it


@dataclass(kw_only=True)
class Report:
    due: int = 0
    ran: int = 0
    runs_ok: int = 0
    runs_failed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    lost_to_data_loss: int = 0
    lost: list[tuple[str, int]] = field(default_factory=list)
    triggered: int = 0  # successful runs of fires `rqbeat trigger` made
    #: every due fire's outcome: ran, a drop reason, data_loss or lost
    outcomes: list[tuple[str, int, str]] = field(default_factory=list)
    bad_drops: list[str] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    #: overlaps with a run Redis forgot when it lost its data (reported): not a failure
    overlaps_across_loss: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)  # runs of fires the trigger never had
    lags_ms: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    history_gaps: list[str] = field(default_factory=list)

    @property
    def unexplained(self) -> list[Duplicate]:
        return [d for d in self.duplicates if d.explanation is None]

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.stuck
            or self.bad_drops
            or self.unexplained
            or self.strays
            or self.history_gaps
            or self.overlaps
        )

    def lag(self, q: float) -> int:
        """The ``q`` quantile (0..1) of first-dispatch lag, ms; 0 when nothing ran."""
        if not self.lags_ms:
            return 0
        if q >= 1 or len(self.lags_ms) < 2:
            return max(self.lags_ms)
        return int(statistics.quantiles(self.lags_ms, n=100, method="inclusive")[max(0, int(q * 100) - 1)])

    def problems(self) -> list[str]:
        """One line per failure, for an assertion message."""
        out = [f"lost fire {sid} {ms}" for sid, ms in self.lost[:20]]
        out += [f"stuck: {s}" for s in self.stuck]
        out += [f"bad drop: {b}" for b in self.bad_drops]
        out += [f"unexplained duplicate {d.key}: {[r.job_id for r in d.runs]}" for d in self.unexplained]
        out += [f"stray run: {s}" for s in self.strays]
        out += [f"overlap: {o}" for o in self.overlaps]
        out += [f"history gap (trimmed before read): {g}" for g in self.history_gaps]
        return out


def audit(obs: Observed) -> Report:
    report = Report(history_gaps=list(obs.history_gaps))
    ok_runs: dict[str, list[RunRecord]] = defaultdict(list)
    for run in obs.runs:
        if run.ok:
            report.runs_ok += 1
            ok_runs[run.key].append(run)
        else:
            report.runs_failed += 1
    for schedule in obs.schedules:
        _audit_schedule(obs, schedule, ok_runs, report)
    for overlap, cause in _overlaps(obs.runs, obs.faults):
        (report.overlaps_across_loss if cause else report.overlaps).append(overlap)
    for key, runs in sorted(ok_runs.items()):
        if len(runs) > 1:
            ordered = sorted(runs, key=_at)
            report.duplicates.append(Duplicate(key, tuple(ordered), _explain(ordered, obs.faults)))
    report.epochs = sorted(
        {int(e.fields["epoch"]) for entries in obs.history.values() for e in entries if "epoch" in e.fields}
    )
    return report


def _overlaps(runs: Sequence[RunRecord], faults: Sequence[Fault]) -> list[tuple[str, bool]]:
    """Runs of one schedule whose spans (start to recorded end) intersect, each with
    whether a reported data loss explains it: the earlier run was in flight when Redis
    lost its data, run state included, and the later one started after that."""
    by_schedule: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_schedule[run.schedule].append(run)
    out = []
    for sid, mine in sorted(by_schedule.items()):
        ordered = sorted(mine, key=lambda r: r.started_ms)
        for before, after in itertools.pairwise(ordered):
            if after.started_ms < before.at_ms:
                line = (
                    f"{sid}: {after.job_id} on {after.worker} started {before.at_ms - after.started_ms} ms "
                    f"before {before.job_id} on {before.worker} ended"
                )
                out.append((line, any(_forgot(f, before, after) for f in faults)))
    return out


def _forgot(fault: Fault, before: RunRecord, after: RunRecord) -> bool:
    return (
        fault.kind == "redis-wipe"
        and fault.reported
        and before.started_ms <= fault.end_ms
        and before.at_ms >= fault.start_ms
        and after.started_ms >= fault.start_ms
    )


def _at(run: RunRecord) -> int:
    return run.at_ms


def _audit_schedule(
    obs: Observed, schedule: Schedule, ok_runs: Mapping[str, list[RunRecord]], report: Report
) -> None:
    sid = schedule.id
    span = (obs.start_ms - _LOOKBACK_MS, obs.now_ms + _LOOKBACK_MS)
    fires = fires_between(schedule.trigger, *span, _MAX_FIRES)
    known = set(fires)
    entries = obs.history.get(sid, ())
    excused = _dropped(schedule, fires, entries, report)
    due = [f for f in fires if obs.start_ms < f <= obs.due_until_ms]
    wiped = _wiped(sid, due, obs, ok_runs)
    report.due += len(due)
    for fire in due:
        outcome = _outcome(f"{sid}:{fire}" in ok_runs, excused.get(fire), fire in wiped)
        report.outcomes.append((sid, fire, outcome))
        if outcome == RAN:
            report.ran += 1
        elif outcome == DATA_LOSS:
            report.lost_to_data_loss += 1
        elif outcome == LOST:
            report.lost.append((sid, fire))
        else:
            report.dropped[outcome] += 1
    _off_trigger(sid, known, entries, ok_runs, report)
    report.lags_ms += [
        e.at_ms - int(e.fields["fire_ms"])
        for e in entries
        if e.event == "dispatched" and e.fields.get("attempt") == "1" and "fire_ms" in e.fields
    ]
    stuck = _stuck(schedule, obs.finals.get(sid), obs)
    if stuck:
        report.stuck.append(f"{sid}: {stuck}")


def _off_trigger(
    sid: str,
    known: set[int],
    entries: Sequence[Entry],
    ok_runs: Mapping[str, list[RunRecord]],
    report: Report,
) -> None:
    """Runs of fires the trigger does not have: made by ``rqbeat trigger``, or strays."""
    # the fire a trigger ran: the pending one when it was due already, else one at its time
    triggered = {int(e.fields.get("fire_ms") or e.at_ms) for e in entries if e.event == "triggered"}
    for runs in ok_runs.values():
        first = runs[0]
        if first.schedule != sid or first.fire_ms in known:
            continue
        if first.fire_ms in triggered:
            report.triggered += 1
        else:
            report.strays.append(f"{first.key} (job {first.job_id})")


def _outcome(ran: bool, drop: str | None, wiped: bool) -> str:
    if ran:
        return RAN
    if drop:
        return drop
    return DATA_LOSS if wiped else LOST


def _wiped(sid: str, due: list[int], obs: Observed, ok_runs: Mapping[str, list[RunRecord]]) -> set[int]:
    """Due fires Redis lost with its data, the loss reported: from the first fire after
    the last one that ran before the wipe, up to the wipe's end (the re-apply)."""
    out: set[int] = set()
    for fault in obs.faults:
        if fault.kind != "redis-wipe" or not fault.reported:
            continue
        done = [f for f in due if any(r.at_ms < fault.start_ms for r in ok_runs.get(f"{sid}:{f}", ()))]
        first = max(done, default=obs.start_ms)
        out.update(f for f in due if first < f <= fault.end_ms)
    return out


def _dropped(
    schedule: Schedule, fires: list[int], entries: Sequence[Entry], report: Report
) -> dict[int, str]:
    """Fires the history lets go of, each with its reason; records bad drops."""
    excused: dict[int, str] = {}
    paused_from: int | None = None
    for e in entries:
        if e.event == "missed":
            names = _missed_fires(fires, e)
            reason = _drop_refused(schedule, e, names)
            if reason:
                report.bad_drops.append(f"{schedule.id} at {e.at_ms}: {reason}")
            excused.update(dict.fromkeys(names, f"misfire:{schedule.misfire.value}"))
        elif e.event == "gave_up":
            excused[int(e.fields["fire_ms"])] = "gave_up"
            _check_give_up(schedule, e, report)
        elif e.event == "failed" and e.fields.get("retry_at") == "":
            if not schedule.pause_on_failure:
                report.bad_drops.append(f"{schedule.id}: paused after a failure without pause_on_failure")
            paused_from = int(e.fields["fire_ms"])
        elif e.event == "skipped":
            _skipped(schedule, fires, e, excused, report)
        elif e.event == "resumed" and paused_from is not None:
            excused.update(dict.fromkeys((f for f in fires if paused_from <= f <= e.at_ms), "paused"))
            paused_from = None
    if paused_from is not None:  # never resumed: everything from the failed fire on
        excused.update(dict.fromkeys((f for f in fires if f >= paused_from), "paused"))
    return excused


def _check_give_up(schedule: Schedule, entry: Entry, report: Report) -> None:
    attempt = int(entry.fields.get("job_id", "0").rsplit("-", 1)[-1])
    if schedule.max_attempts is None or attempt < schedule.max_attempts:
        report.bad_drops.append(f"{schedule.id}: gave up after attempt {attempt}")


def _skipped(
    schedule: Schedule, fires: list[int], entry: Entry, excused: dict[int, str], report: Report
) -> None:
    """A resume's ``skipped`` entry: ``count`` fires from ``fire_at``, none after the resume."""
    first, count = int(entry.fields["fire_ms"]), int(entry.fields["count"])
    index = bisect.bisect_left(fires, first)
    names = fires[index : index + count]
    if len(names) != count or (names and names[0] != first):
        report.bad_drops.append(f"{schedule.id}: skipped {count} fires from {first}, not the trigger's")
    elif names and names[-1] > entry.at_ms:
        report.bad_drops.append(f"{schedule.id}: skipped fire {names[-1]} after the resume at {entry.at_ms}")
    excused.update(dict.fromkeys(names, "skipped"))


def _missed_fires(fires: list[int], entry: Entry) -> list[int]:
    """The ``count`` fires just before the fire a ``missed`` entry names (the one that
    runs in their place, or, for ``skip``, the next fire that waits)."""
    anchor = int(entry.fields.get("next_fire_ms") or entry.fields["fire_ms"])
    count = int(entry.fields["count"])
    index = bisect.bisect_left(fires, anchor)
    return fires[max(0, index - count) : index]


def _drop_refused(schedule: Schedule, entry: Entry, names: list[int]) -> str | None:
    """Why the misfire policy did not allow this drop, or None if it did."""
    count, at = int(entry.fields["count"]), entry.at_ms
    anchor = int(entry.fields.get("next_fire_ms") or entry.fields["fire_ms"])
    if len(names) != count:
        return f"{count} fires dropped before {anchor}, but the trigger has only {len(names)}"
    if names and names[-1] > at:
        return f"dropped fire {names[-1]} that was not due yet (at {at})"
    if names and names[0] > at - MISFIRE_GRACE_MS:
        return f"dropped fire {names[0]} within the misfire grace (at {at})"
    window = schedule.catchup_window_ms
    recent = [f for f in names if window is None or f >= at - window]
    if not recent or schedule.misfire is Misfire.SKIP:
        return None
    if schedule.misfire is Misfire.COALESCE and anchor <= at:
        return None  # a newer missed fire ran in their place
    return f"policy {schedule.misfire.value} dropped {len(recent)} fires inside its catch-up window"


def _stuck(schedule: Schedule, final: FinalState | None, obs: Observed) -> str | None:  # noqa: PLR0911 - one return per verdict reads best
    if final is None:
        return "missing at the end"
    if final.state == "due":
        if final.due_ms is None:
            return "state due but not in the due set"
        if final.due_ms < obs.now_ms - obs.stuck_after_ms:
            return f"due since {obs.now_ms - final.due_ms} ms"
    elif final.state == "running":
        if final.dispatched_ms is None or final.dispatched_ms < obs.now_ms - obs.stuck_after_ms:
            return "a run in flight for too long"
    elif final.state == "paused":
        if not schedule.pause_on_failure:
            return "paused, but nothing paused it on purpose"
    else:
        return f"state {final.state}"
    return None


def _explain(runs: list[RunRecord], faults: Sequence[Fault]) -> str | None:
    """Why each earlier successful run of a fire was not acknowledged; None if some
    repeat has no fault that explains it."""
    reasons = []
    for earlier, later in itertools.pairwise(runs):
        cause = next((f for f in faults if _explains(f, earlier, later)), None)
        if cause is None:
            return None
        after, during = _REDIS_WORDS.get(cause.kind, (cause.kind, cause.kind))
        if cause.kind == "worker-kill":
            what = f"worker {cause.target} killed {cause.start_ms - earlier.at_ms} ms after"
        elif cause.start_ms >= earlier.at_ms:
            what = f"Redis {after} {cause.start_ms - earlier.at_ms} ms after"
        else:
            what = (
                f"Redis {during} {cause.end_ms - cause.start_ms} ms while it ran (its heartbeat lapsed, so "
                f"the watchdog judged it abandoned), and"
            )
        reasons.append(
            f"{earlier.job_id} on {earlier.worker}: {what} it recorded its run, before the ack; "
            f"{later.job_id} ran it again"
        )
    return "; ".join(reasons)


#: How each Redis fault reads in an explanation: (happened after the run, while it ran).
_REDIS_WORDS = {
    "redis-kill": ("killed", "down"),
    "redis-restart": ("restarted", "restarting"),
    "redis-wipe": ("wiped", "wiped and restarting"),
    "maxmemory": ("full", "full"),
}


def _explains(fault: Fault, earlier: RunRecord, later: RunRecord) -> bool:
    """A worker killed after the earlier run's side effect, or Redis down at any time
    from its start to the repeat (a lapsed heartbeat reads as a dead worker)."""
    if fault.kind == "worker-kill":
        return fault.target == earlier.worker and earlier.at_ms - 1000 <= fault.start_ms <= later.at_ms
    if fault.kind in _REDIS_FAULTS:
        return fault.start_ms <= later.at_ms and fault.end_ms >= earlier.started_ms - 1000
    return False
