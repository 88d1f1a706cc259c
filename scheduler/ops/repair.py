"""Finding hand-corrupted state, and the safe repair for each finding (pure part).

:func:`diagnose` looks at what :mod:`scheduler.ops.repair_io` read from Redis and
returns one :class:`Finding` per problem plus one :class:`Fix` per key. Each fix is
the *safe* thing, applied by ``rqbeat check --repair`` in one small atomic step
(a Lua script that first re-checks what it depends on):

============== =================================================== ===========================
kind           what is wrong                                       repair
============== =================================================== ===========================
wrong_type     a set, schedule or history key of the wrong type    renamed to <ns>:quarantine:…
dangling_id    an id in the id set / a zset, with no hash          the id is dropped
not_in_ids     a schedule hash missing from the id set             added to it
bad_definition definition missing, not JSON, or invalid            marked ``broken`` (kept)
bad_field      version/attempt/fire_at/state unreadable            field reset (1, 1, '', …)
in_both        in the due and the running zset                    kept where its state says
stranded       due/running but in neither zset (never fires)       put back in its zset
wrong_set      in a zset its state does not belong in              moved where its state says
lost_run       in flight, but RQ has no such job                   due now as a retry (like
                                                                   the watchdog's "lost")
============== =================================================== ===========================

The ``allow_all`` run records have their own kinds (:mod:`scheduler.ops.runrepair`).

Nothing valid is deleted: a definition is never removed, only a schedule whose
definition cannot be read is marked ``broken`` (with the reason) until a valid one is
upserted; keys of the wrong type are moved aside, not deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scheduler import cron, policy
from scheduler.clock import iso, parse_iso_ms
from scheduler.errors import CorruptDefinition
from scheduler.model import Schedule
from scheduler.protocol import STATES, ScheduleState
from scheduler.records import decode_definition
from scheduler.stored import definition_text

SET_TYPES = {"due": "zset", "running": "zset", "ids": "set"}


class Place(StrEnum):
    """Which zset a repaired schedule goes to (repair_io.PLACE's ``where``)."""

    DUE = "due"
    RUNNING = "running"
    NONE = "none"  # neither: paused with no run in flight, or broken


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, as reported (one line each)."""

    kind: str
    key: str
    schedule_id: str | None
    detail: str
    action: str

    def line(self) -> str:
        subject = self.schedule_id if self.schedule_id is not None else self.key
        return f"{self.kind} {subject}: {self.detail} -> {self.action}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.schedule_id,
            "key": self.key,
            "detail": self.detail,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class Fix:
    """One atomic repair step. ``op``: ``quarantine`` (rename ``key`` aside if it still
    has type ``seen_type``), ``drop`` (remove ``schedule_id`` from the sets if its hash
    is still missing) or ``place`` (compare-and-set on ``seen``, then put the schedule
    in ``where`` with ``score_ms``, set ``fields``, maybe clear the run in flight)."""

    op: str
    key: str
    schedule_id: str | None = None
    seen_type: str = ""
    seen: tuple[str, str, str] = ("", "", "")  # version, state, job_id as read
    where: Place = Place.NONE
    score_ms: int = 0
    fields: Mapping[str, str] = field(default_factory=dict)
    clear_job: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class View:
    """What was read about one schedule id."""

    schedule_id: str
    key: str
    key_type: str
    fields: Mapping[str, str]
    in_ids: bool
    due_ms: int | None
    running_ms: int | None
    history_key: str
    history_type: str
    job_exists: bool | None  # None: no job id to look up


@dataclass(slots=True)
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)

    def add(self, kind: str, key: str, schedule_id: str | None, detail: str, action: str) -> None:
        self.findings.append(Finding(kind, key, schedule_id, detail, action))


def diagnose_sets(set_types: Mapping[str, tuple[str, str]], quarantine_prefix: str) -> Diagnosis:
    """The namespace's own keys: ``{name: (key, type)}`` for due, running and ids."""
    out = Diagnosis()
    for name, (key, key_type) in set_types.items():
        if key_type not in (SET_TYPES[name], "none"):
            target = f"{quarantine_prefix}:{name}"
            out.add(
                "wrong_type", key, None, f"is a {key_type}, not a {SET_TYPES[name]}", f"renamed to {target}"
            )
            out.fixes.append(Fix("quarantine", key, seen_type=key_type, note=target))
    return out


def diagnose(view: View, now_ms: int, quarantine_prefix: str) -> Diagnosis:
    """Every problem of one schedule id, and the fixes that make it consistent."""
    out = Diagnosis()
    if view.key_type == "none":
        sets = [
            n
            for n, present in (("ids", view.in_ids), ("due", view.due_ms), ("running", view.running_ms))
            if present is not None and present is not False
        ]
        if not sets:
            return out  # removed since its id was listed: nothing left, nothing wrong
        out.add(
            "dangling_id",
            view.key,
            view.schedule_id,
            f"in {', '.join(sets)} but has no hash",
            "id dropped from the sets",
        )
        out.fixes.append(Fix("drop", view.key, view.schedule_id))
        return out
    if view.key_type != "hash":
        target = f"{quarantine_prefix}:schedule:{view.schedule_id}"
        out.add(
            "wrong_type",
            view.key,
            view.schedule_id,
            f"is a {view.key_type}, not a hash",
            f"renamed to {target}; id dropped from the sets",
        )
        out.fixes.append(Fix("quarantine", view.key, view.schedule_id, seen_type=view.key_type, note=target))
        return out
    if view.history_type not in ("stream", "none"):
        target = f"{quarantine_prefix}:history:{view.schedule_id}"
        out.add(
            "wrong_type",
            view.history_key,
            view.schedule_id,
            f"is a {view.history_type}, not a stream",
            f"renamed to {target}",
        )
        out.fixes.append(
            Fix("quarantine", view.history_key, view.schedule_id, seen_type=view.history_type, note=target)
        )
    _diagnose_hash(view, now_ms, out)
    return out


def _diagnose_hash(view: View, now_ms: int, out: Diagnosis) -> None:
    raw = view.fields
    seen = (raw.get("version", ""), raw.get("state", ""), raw.get("job_id", ""))
    if not view.in_ids:
        out.add("not_in_ids", view.key, view.schedule_id, "hash is not in the id set", "added to it")
    try:
        schedule = decode_definition(view.schedule_id, definition_text(raw))
    except CorruptDefinition as exc:
        _diagnose_unreadable(view, str(exc), seen, out)
        return
    fields = _field_resets(view, out)
    place = _placement(view, schedule, now_ms, fields, out)
    if place is not None or fields or not view.in_ids:
        where, score_ms, clear_job = place or _current_place(view)
        out.fixes.append(
            Fix(
                "place",
                view.key,
                view.schedule_id,
                seen=seen,
                where=where,
                score_ms=score_ms,
                fields=fields,
                clear_job=clear_job,
                note="; ".join(f.kind for f in out.findings),
            )
        )


def _diagnose_unreadable(view: View, reason: str, seen: tuple[str, str, str], out: Diagnosis) -> None:
    consistent = seen[1] == ScheduleState.BROKEN and view.due_ms is None and view.running_ms is None
    if consistent and view.in_ids:
        return  # already broken and visible: fixed by upserting a valid definition
    if not consistent:
        out.add("bad_definition", view.key, view.schedule_id, reason, "marked broken (definition kept)")
    fields: dict[str, str] = {"state": ScheduleState.BROKEN}
    if not view.fields.get("error") or not consistent:
        fields["error"] = f"repair: {reason}"[:500]
    out.fixes.append(
        Fix(
            "place",
            view.key,
            view.schedule_id,
            seen=seen,
            fields=fields,
            clear_job=True,
            note="bad_definition",
        )
    )


def _field_resets(view: View, out: Diagnosis) -> dict[str, str]:
    """Fields the code reads with int()/parse_iso_ms() that would break it."""
    raw = view.fields
    resets: dict[str, str] = {}
    # attempt is absent while it is 1 (the stored form omits it): only a damaged value is reset
    for name, default, optional in (("version", "1", False), ("attempt", "1", True)):
        value = raw.get(name)
        if value is None and optional:
            continue
        if value is None or not value.isascii() or not value.isdigit() or int(value) < 1:
            resets[name] = default
            out.add("bad_field", view.key, view.schedule_id, f"{name} is {value!r}", f"set to {default}")
    fire_at = raw.get("fire_at")
    if fire_at and not _is_iso(fire_at):
        resets["fire_at"] = ""
        out.add(
            "bad_field",
            view.key,
            view.schedule_id,
            f"fire_at is {fire_at!r}",
            "cleared (recomputed from the due time)",
        )
    return resets


def _placement(
    view: View, schedule: Schedule, now_ms: int, fields: dict[str, str], out: Diagnosis
) -> tuple[Place, int, bool] | None:
    """Where the schedule belongs, when that is not where it is (else None)."""
    state, job_id = view.fields.get("state", ""), view.fields.get("job_id", "")
    in_due, in_running = view.due_ms is not None, view.running_ms is not None
    if state not in STATES:
        fields["state"] = ScheduleState.RUNNING if job_id else ScheduleState.DUE
        out.add("bad_field", view.key, view.schedule_id, f"state is {state!r}", f"set to {fields['state']}")
        state = str(fields["state"])  # plain text: it is shown with !r
    if in_due and in_running:
        keep = Place.RUNNING if job_id else Place.DUE
        out.add(
            "in_both", view.key, view.schedule_id, "in the due and the running zset", f"kept in {keep} only"
        )
    idle = (ScheduleState.PAUSED, ScheduleState.COMPLETED)
    if state == ScheduleState.BROKEN or (state in idle and not job_id):
        if in_due or in_running:
            out.add(
                "wrong_set", view.key, view.schedule_id, f"{state} but in a zset", "taken out of the zsets"
            )
            return Place.NONE, 0, False
        return None
    if job_id:
        return _in_flight(view, state, fields, now_ms, out)
    return _idle(view, schedule, state, fields, now_ms=now_ms, out=out)


def _in_flight(
    view: View, state: str, fields: dict[str, str], now_ms: int, out: Diagnosis
) -> tuple[Place, int, bool] | None:
    job_id = view.fields["job_id"]
    if view.job_exists is False:
        attempt = int(fields.get("attempt", view.fields.get("attempt", "1")))
        fields.update(
            state=ScheduleState.DUE if state != ScheduleState.PAUSED else ScheduleState.PAUSED,
            attempt=str(attempt + 1),
            last_result="failed",
            last_error=f"repair: job {job_id} not found in RQ",
        )
        out.add(
            "lost_run",
            view.key,
            view.schedule_id,
            f"job {job_id} is in flight but RQ has no such job",
            "due now as a retry" if state != ScheduleState.PAUSED else "left paused",
        )
        return (Place.DUE if state != ScheduleState.PAUSED else Place.NONE), now_ms, True
    if state not in (ScheduleState.RUNNING, ScheduleState.PAUSED):
        fields["state"] = ScheduleState.RUNNING
        out.add(
            "bad_field",
            view.key,
            view.schedule_id,
            f"state is {state!r} with job {job_id} in flight",
            "set to running",
        )
    if view.running_ms is None:
        out.add(
            "stranded" if view.due_ms is None else "wrong_set",
            view.key,
            view.schedule_id,
            f"job {job_id} in flight but not in the running zset",
            "in the running zset, the watchdog looks now",
        )
        return Place.RUNNING, now_ms, False
    return (Place.RUNNING, view.running_ms, False) if view.due_ms is not None or "state" in fields else None


def _idle(
    view: View, schedule: Schedule, state: str, fields: dict[str, str], *, now_ms: int, out: Diagnosis
) -> tuple[Place, int, bool] | None:
    if state != ScheduleState.DUE:
        fields["state"] = ScheduleState.DUE
        out.add(
            "bad_field", view.key, view.schedule_id, f"state is {state!r} with no run in flight", "set to due"
        )
    if view.due_ms is not None:
        if view.running_ms is not None or "state" in fields:
            return Place.DUE, view.due_ms, True
        return None
    fire_at = fields.get("fire_at", view.fields.get("fire_at", ""))
    if fire_at:
        score = policy.due_score_ms(schedule, parse_iso_ms(fire_at))
    else:
        fire = cron.next_fire_ms(schedule.trigger, now_ms)
        fields["fire_at"], score = iso(fire), policy.due_score_ms(schedule, fire)
    where = (
        "the running zset with no run in flight"
        if view.running_ms is not None
        else "neither zset: it never fires"
    )
    out.add(
        "wrong_set" if view.running_ms is not None else "stranded",
        view.key,
        view.schedule_id,
        f"due but in {where}",
        f"due at {iso(score)}",
    )
    return Place.DUE, score, True


def _current_place(view: View) -> tuple[Place, int, bool]:
    if view.due_ms is not None:
        return Place.DUE, view.due_ms, False
    if view.running_ms is not None:
        return Place.RUNNING, view.running_ms, False
    return Place.NONE, 0, False


def _is_iso(text: str) -> bool:
    try:
        parse_iso_ms(text)
    except ValueError:
        return False
    return True
