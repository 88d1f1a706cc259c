"""A schedule's history as runs: each entry with its attempt, outcome and duration.
Shared by ``rqbeat history`` and the web dashboard.

The history stream records events, not runs. A run is a ``dispatched`` entry and the
entry that ended it (``succeeded``, ``failed`` or ``gave_up``), joined by job id. A
run on a ``workers.Worker`` also records when its job started and ended (Redis time,
in the ending entry), so its lateness (fire to start: queueing, a busy or absent
worker) and its duration (start to end: the job itself) are known. A plain
``rq worker`` reports neither: its duration is then dispatch to acknowledgement (time
in the queue, the job, and the watchdog's delay), and its lateness is unknown.
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
    duration_ms: int | None  # start to end; dispatch to ack when the start is unknown
    lateness_ms: int | None  # fire to start
    worker: str | None
    outcome: str  # the run's ending (dispatched), or what the entry says happened
    run_outcome: str | None  # dispatched only: succeeded / failed / gave_up / in flight
    by: str | None = None  # an audited edit (scheduler.audit): who made it


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
        end = ended.get(job_id or "")
        duration, lateness = _times(dispatched.get(job_id or ""), end)
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
                lateness_ms=lateness,
                worker=(end.fields.get("worker") or None) if end else None,
                outcome=(run_outcome or "") if entry.event == "dispatched" else _details(entry, when),
                run_outcome=run_outcome,
                by=entry.fields.get("by") or None,
            )
        )
    return lines


def _times(dispatch: HistoryEntry | None, end: HistoryEntry | None) -> tuple[int | None, int | None]:
    """(duration, lateness) of a run from its dispatch and its ending entries."""
    if end is None:
        return None, None
    started, ended = _time(end.fields.get("started_at")), _time(end.fields.get("ended_at"))
    fire = _time(end.fields.get("fire_at"))
    lateness = started - fire if started is not None and fire is not None else None
    if started is not None:
        return (ended if ended is not None else end.at_ms) - started, lateness
    return (end.at_ms - dispatch.at_ms if dispatch else None), lateness


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
    if "by" in fields:
        return edit_details(fields, when)
    retry_ms, next_ms = _time(fields.get("retry_at")), _time(fields.get("next_fire_at"))
    error = (fields.get("error") or "").strip().splitlines()
    reason = error[-1] if error else ""  # a traceback's last line names the exception
    if entry.event == "failed":
        then = f"retry at {when(retry_ms)}" if retry_ms is not None else "paused"
        return f"{reason} -> {then}" if reason else then
    if entry.event in ("alert_sent", "alert_failed"):
        what = f"{fields.get('kind', '?')}{' recovered' if fields.get('recovered') == '1' else ''}"
        result = f"HTTP {fields['status']}" if "status" in fields else reason
        return f"{what} -> {fields.get('url', '?')}: {result} ({fields.get('attempts', '?')} attempts)"
    if entry.event == "missed":
        count = fields.get("count", "?")
        nxt = f", next fire {when(next_ms)}" if next_ms is not None else ""
        return f"{count} fire{'' if count == '1' else 's'} dropped by the misfire policy{nxt}"
    if entry.event == "skipped":
        count = fields.get("count", "?")
        return f"{count} fire{'' if count == '1' else 's'} skipped: pending or due while paused"
    return reason


def edit_details(fields: dict[str, str], when: Callable[[int], str]) -> str:
    """An audited edit in a few words: what changed, the pause's end, the note."""
    until = _time(fields.get("until"))
    parts = [
        fields.get("changed", ""),
        f"until {when(until)}" if until is not None else "",
        f'"{fields["note"]}"' if fields.get("note") else "",
    ]
    return "; ".join(p for p in parts if p)


def _time(value: str | None) -> int | None:
    try:
        return parse_iso_ms(value) if value else None
    except ValueError:
        return None
