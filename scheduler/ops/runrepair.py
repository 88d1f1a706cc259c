"""``rqbeat check`` on the per-run records of ``overlap = allow_all`` (pure part).

Each run in flight is a record, ``<ns>:runs:<id>`` field ``<fire ms>``, and a member
``<id>:<fire ms>`` of ``<ns>:concurrent`` (the leader's look at it); the schedule's
``runs_in_flight`` counts the records. :func:`diagnose_runs` looks at what
:mod:`scheduler.ops.runrepair_io` read of one schedule id at one instant:

=================  =============================================  ===============================
kind               what is wrong                                  repair (RUN_FIX)
=================  =============================================  ===============================
run_no_member      a record with no member: nobody looks at it,   member put back, due now: the
                   its slot is held forever                       leader acks, retries or drops it
run_no_record      a member with no record (the leader drops it   member dropped, count rewritten,
                   when its look comes, which may be far off)     a fire waiting for a slot woken
orphan_run         a record of a schedule that no longer exists   record and member dropped
bad_run            a record that is not a readable run            record and member dropped
run_count          ``runs_in_flight`` is not the number of        rewritten from the records; a
                   records (a wrong count holds or frees slots)   fire waiting for a slot woken
=================  =============================================  ===============================

A record of a schedule that is no longer ``allow_all`` is not damage while its member
is there: switching policy lets runs in flight finish, watched by the leader. Without
a member it is ``run_no_member`` like any other, and put back for the leader to end
(ack from RQ's state, retry or give up), never dropped: the run may still succeed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.ops.repair import Diagnosis, Fix
from scheduler.protocol import IN_FLIGHT_FIELD, RunState


class RunOp:
    """RUN_FIX's ``op`` (the :class:`~scheduler.ops.repair.Fix` op of a run's repair)."""

    MEMBER = "run_member"  # put the member back
    DROP = "run_drop"  # drop the record (if any) and the member
    COUNT = "run_count"  # rewrite runs_in_flight from the records


OPS = (RunOp.MEMBER, RunOp.DROP, RunOp.COUNT)


@dataclass(frozen=True, slots=True)
class RunsView:
    """One schedule id's ``allow_all`` state as RUNS_READ saw it at one instant."""

    schedule_id: str
    runs_key: str
    schedule_exists: bool
    allow_all: bool  # its hash has the cap field (max_concurrent)
    count: str | None  # runs_in_flight as stored
    records: Mapping[str, str]  # fire ms -> raw record
    with_member: frozenset[str]  # the fires of records that have their member
    members_without_record: tuple[str, ...]  # fires


def diagnose_runs(view: RunsView) -> Diagnosis:
    """Every problem of one schedule id's runs, and the compare-and-set fix of each."""
    out = Diagnosis()
    sid, key = view.schedule_id, view.runs_key
    dropped = 0
    for fire, raw in sorted(view.records.items()):
        member = f"{sid}:{fire}"
        problem = _unreadable(raw)
        if problem is None and not view.schedule_exists:
            problem = "its schedule does not exist"
            out.add(
                "orphan_run", key, sid, f"run {member} is kept but {problem}", "record and member dropped"
            )
        elif problem is not None:
            out.add("bad_run", key, sid, f"run {member}: {problem}", "record and member dropped")
        if problem is not None:
            out.fixes.append(Fix(RunOp.DROP, key, sid, seen=(fire, raw, ""), note="run"))
            dropped += 1
        elif fire not in view.with_member:
            policy = "" if view.allow_all else " (the schedule is no longer allow_all)"
            out.add(
                "run_no_member",
                key,
                sid,
                f"run {member} is not in the concurrent zset: nobody ends it, its slot is held{policy}",
                "member put back: the leader looks at it now",
            )
            out.fixes.append(Fix(RunOp.MEMBER, key, sid, seen=(fire, raw, ""), note="run"))
    for fire in view.members_without_record:
        out.add(
            "run_no_record",
            key,
            sid,
            f"member {sid}:{fire} of the concurrent zset has no record",
            "member dropped, count rewritten",
        )
        out.fixes.append(Fix(RunOp.DROP, key, sid, seen=(fire, "", ""), note="member"))
    expected = len(view.records)
    if view.schedule_exists and not dropped and _count(view.count) != expected:
        out.add(
            "run_count",
            key,
            sid,
            f"{IN_FLIGHT_FIELD} is {view.count!r} but {expected} run(s) have a record",
            f"set to {expected}",
        )
        out.fixes.append(Fix(RunOp.COUNT, key, sid, seen=("", view.count or "", ""), note="count"))
    return out


def _count(stored: str | None) -> int | None:
    """The stored count; absent is 0 (a schedule that never spawned a run)."""
    if stored is None:
        return 0
    return int(stored) if stored.isascii() and stored.isdigit() else None


def _unreadable(raw: str) -> str | None:
    """Why ``raw`` is no run record the leader can act on (None: it is one)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "the record is not JSON"
    if not isinstance(data, dict):
        return "the record is not a JSON object"
    try:
        str(data["job_id"])
        int(data["attempt"])
        RunState(data["state"])
    except (KeyError, TypeError, ValueError):
        return "the record has no job_id, attempt or state"
    return None
