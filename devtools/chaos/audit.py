"""The chaos audit: a pure function from what a run observed to what went wrong.

Inputs (:class:`Observed`) are plain data collected during and after the run: the
schedules, every history entry, every run the jobs recorded, the faults the driver
injected, and each schedule's state at the end. :func:`audit` computes, per schedule:

* **due** — the trigger's fires in ``(start_ms, due_until_ms]``;
* **ran** — due fires with a successful recorded run;
* **dropped** — due fires, not run, that the contract lets go: named by a ``missed`` history entry
  (the ``count`` fires just before the fire it names) whose drop the misfire policy
  allows, given up after ``max_attempts`` (``gave_up``), or passed while the schedule
  was paused by ``pause_on_failure``;
* **lost** — due, never run successfully, not dropped. Any lost fire fails the run;
* **duplicates** — fires with more than one successful run; each needs a fault that
  explains it (a worker killed, or Redis killed, after the earlier run recorded its
  side effect and before the ack, or Redis down while it ran so its heartbeat
  lapsed), or it fails the run;
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
    lost: list[tuple[str, int]] = field(default_factory=list)
    bad_drops: list[str] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
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
            self.lost or self.stuck or self.bad_drops or self.unexplained or self.strays or self.history_gaps
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
    for key, runs in sorted(ok_runs.items()):
        if len(runs) > 1:
            ordered = sorted(runs, key=_at)
            report.duplicates.append(Duplicate(key, tuple(ordered), _explain(ordered, obs.faults)))
    report.epochs = sorted(
        {int(e.fields["epoch"]) for entries in obs.history.values() for e in entries if "epoch" in e.fields}
    )
    return report


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
    report.due += len(due)
    for fire in due:
        if f"{sid}:{fire}" in ok_runs:
            report.ran += 1
        elif fire in excused:
            report.dropped[excused[fire]] += 1
        else:
            report.lost.append((sid, fire))
    report.strays += [
        f"{key} (job {runs[0].job_id})"
        for key, runs in ok_runs.items()
        if runs[0].schedule == sid and runs[0].fire_ms not in known
    ]
    report.lags_ms += [
        e.at_ms - int(e.fields["fire_ms"])
        for e in entries
        if e.event == "dispatched" and e.fields.get("attempt") == "1" and "fire_ms" in e.fields
    ]
    stuck = _stuck(schedule, obs.finals.get(sid), obs)
    if stuck:
        report.stuck.append(f"{sid}: {stuck}")


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
            attempt = int(e.fields.get("job_id", "0").rsplit("-", 1)[-1])
            if schedule.max_attempts is None or attempt < schedule.max_attempts:
                report.bad_drops.append(f"{schedule.id}: gave up after attempt {attempt}")
            excused[int(e.fields["fire_ms"])] = "gave_up"
        elif e.event == "failed" and e.fields.get("retry_at") == "":
            if not schedule.pause_on_failure:
                report.bad_drops.append(f"{schedule.id}: paused after a failure without pause_on_failure")
            paused_from = int(e.fields["fire_ms"])
        elif e.event == "resumed" and paused_from is not None:
            excused.update(dict.fromkeys((f for f in fires if paused_from <= f <= e.at_ms), "paused"))
            paused_from = None
    if paused_from is not None:  # never resumed: everything from the failed fire on
        excused.update(dict.fromkeys((f for f in fires if f >= paused_from), "paused"))
    return excused


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
        if cause.kind == "worker-kill":
            what = f"worker {cause.target} killed {cause.start_ms - earlier.at_ms} ms after"
        elif cause.start_ms >= earlier.at_ms:
            what = f"Redis killed {cause.start_ms - earlier.at_ms} ms after"
        else:
            what = (
                f"Redis down {cause.end_ms - cause.start_ms} ms while it ran (its heartbeat lapsed, so the "
                f"watchdog judged it abandoned), and"
            )
        reasons.append(
            f"{earlier.job_id} on {earlier.worker}: {what} it recorded its run, before the ack; "
            f"{later.job_id} ran it again"
        )
    return "; ".join(reasons)


def _explains(fault: Fault, earlier: RunRecord, later: RunRecord) -> bool:
    """A worker killed after the earlier run's side effect, or Redis down at any time
    from its start to the repeat (a lapsed heartbeat reads as a dead worker)."""
    if fault.kind == "worker-kill":
        return fault.target == earlier.worker and earlier.at_ms - 1000 <= fault.start_ms <= later.at_ms
    if fault.kind == "redis-kill":
        return fault.start_ms <= later.at_ms and fault.end_ms >= earlier.started_ms - 1000
    return False
