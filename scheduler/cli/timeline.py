"""A schedule's history as runs: each entry with its attempt, outcome and duration.

The history stream records events, not runs. A run is a ``dispatched`` entry and the
entry that ended it (``succeeded``, ``failed`` or ``gave_up``), joined by job id; the
run's duration is the time between the two entries (stream ids are Redis server
time), so it measures dispatch to acknowledgement: time in the queue plus the job
itself (plus the watchdog's delay for runs a plain ``rq worker`` finished). The
entries carry no start/end time of the job proper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.clock import parse_iso_ms
from scheduler.store import HistoryEntry

ENDINGS = ("succeeded", "failed", "gave_up")


@dataclass(frozen=True, slots=True)
class Line:
    """One history entry, explained."""

    entry: HistoryEntry
    fire_ms: int | None
    attempt: int | None
    job_id: str | None
    duration_ms: int | None
    outcome: str  # the run's ending (dispatched), or what the entry says happened
    run_outcome: str | None  # dispatched only: succeeded / failed / gave_up / in flight


def attempt_of(job_id: str | None) -> int | None:
    """The attempt in a job id ``<schedule>-<fire ms>-<attempt>``."""
    tail = (job_id or "").rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


def explain(
    entries: Sequence[HistoryEntry], in_flight_job: str | None, when: Callable[[int], str]
) -> list[Line]:
    """Each entry with what the others tell about it (oldest first, as given); ``when``
    formats the times mentioned in an outcome."""
    dispatched = {e.fields["job_id"]: e for e in entries if e.event == "dispatched" and "job_id" in e.fields}
    ended = {e.fields["job_id"]: e for e in entries if e.event in ENDINGS and "job_id" in e.fields}
    lines = []
    for entry in entries:
        job_id = entry.fields.get("job_id") or None
        start = dispatched.get(job_id or "")
        end = ended.get(job_id or "")
        duration = end.at_ms - start.at_ms if start and end else None
        run_outcome = None
        if entry.event == "dispatched":
            run_outcome = end.event if end else ("in flight" if job_id == in_flight_job else None)
        lines.append(
            Line(
                entry=entry,
                fire_ms=_time(entry.fields.get("fire_at")),
                attempt=_attempt(entry),
                job_id=job_id,
                duration_ms=duration,
                outcome=(run_outcome or "") if entry.event == "dispatched" else _details(entry, when),
                run_outcome=run_outcome,
            )
        )
    return lines


def _attempt(entry: HistoryEntry) -> int | None:
    fields = entry.fields
    if fields.get("attempt", "").isdigit():
        return int(fields["attempt"])
    if fields.get("next_attempt", "").isdigit():  # failed: the attempt that failed
        return int(fields["next_attempt"]) - 1
    return attempt_of(fields.get("job_id"))


def _details(entry: HistoryEntry, when: Callable[[int], str]) -> str:
    """What a non-dispatch entry says, in a few words."""
    fields = entry.fields
    retry_ms, next_ms = _time(fields.get("retry_at")), _time(fields.get("next_fire_at"))
    error = (fields.get("error") or "").strip().splitlines()
    reason = error[-1] if error else ""  # a traceback's last line names the exception
    if entry.event == "failed":
        then = f"retry at {when(retry_ms)}" if retry_ms is not None else "paused"
        return f"{reason} -> {then}" if reason else then
    if entry.event == "missed":
        count = fields.get("count", "?")
        nxt = f", next fire {when(next_ms)}" if next_ms is not None else ""
        return f"{count} fire{'' if count == '1' else 's'} dropped by the misfire policy{nxt}"
    if entry.event == "skipped":
        count = fields.get("count", "?")
        return f"{count} fire{'' if count == '1' else 's'} skipped: pending or due while paused"
    return reason


def _time(value: str | None) -> int | None:
    try:
        return parse_iso_ms(value) if value else None
    except ValueError:
        return None
