"""The Python side of the stored and scripted contracts: the errors a stored
definition decodes to, the named script replies and states, the job meta layout."""

from __future__ import annotations

import json
import re
from enum import IntEnum
from typing import Any

import pytest

import scheduler
from scheduler import scripts
from scheduler.cli.rows import Definitions
from scheduler.engine import lease
from scheduler.engine.decide import DECIDED_FROM
from scheduler.engine.runs import IN_FLIGHT_FIELDS
from scheduler.errors import CorruptDefinition, CorruptJobMeta, RqbeatError
from scheduler.jobmeta import META_KEY, FireMeta
from scheduler.ops import repair_io
from scheduler.protocol import (
    DUE_FIELDS,
    ENDED_FIELD,
    RUN_FIELDS,
    STARTED_FIELDS,
    STATES,
    UPSERT_READ_FIELDS,
    AckReply,
    AcquireReply,
    AlertRecordReply,
    CancelReply,
    ConcurrentReply,
    DispatchReply,
    LeaseReply,
    MarkBrokenReply,
    NudgeReply,
    PauseReply,
    RecordReply,
    RedispatchReply,
    RemoveReply,
    RepairReply,
    ResumeReply,
    RetryReply,
    ScheduleState,
    StartReply,
    TriggerReply,
    UpsertReply,
    lua_list,
)
from scheduler.records import decode_definition
from workers.fire import Fire


@pytest.mark.parametrize(
    ("definition", "reason"),
    [
        (None, "no 'definition' field"),
        ("{", "not valid JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({"id": "other", "target": "a.b"}), "does not match the key"),
        (json.dumps({"target": "a.b", "every": "0s"}), "every"),
    ],
)
def test_a_stored_definition_that_cannot_be_used_is_one_error_with_its_schedule(
    definition: str | None, reason: str
) -> None:
    with pytest.raises(CorruptDefinition) as caught:
        decode_definition("s1", definition)
    assert caught.value.schedule_id == "s1"
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason  # what the schedule's error field shows
    assert isinstance(caught.value, RqbeatError) and isinstance(caught.value, ValueError)


def test_a_shared_bad_shape_names_each_schedule_it_breaks() -> None:
    definitions = Definitions()
    bad = json.dumps({"target": "a.b", "every": "0s"})
    ids = []
    for schedule_id in ("first", "second"):
        with pytest.raises(CorruptDefinition) as caught:
            definitions.decode(schedule_id, bad)
        ids.append(caught.value.schedule_id)
    assert ids == ["first", "second"]


def test_the_errors_are_exported_from_the_package() -> None:
    assert scheduler.ScheduleConflict.__mro__[1] is RqbeatError
    assert scheduler.CorruptDefinition is CorruptDefinition


_INT_RETURN = re.compile(r"\breturn (-?\d+)\b")
_STR_RETURN = re.compile(r"\breturn '([a-z_]+)'")


@pytest.mark.parametrize(
    ("script", "reply"),
    [
        (scripts.REMOVE, RemoveReply),
        (scripts.PAUSE, PauseReply),
        (scripts.RESUME, ResumeReply),
        (scripts.RECORD_EDIT, RecordReply),
        (scripts.ACK, AckReply),
        (scripts.RETRY, RetryReply),
        (scripts.NUDGE, NudgeReply),
        (scripts.CANCEL, CancelReply),
        (scripts.ALERT_RECORD, AlertRecordReply),
        (scripts.START, StartReply),
        (scripts.MARK_BROKEN, MarkBrokenReply),
        (scripts.DISPATCH, DispatchReply),
        (scripts.CONC_ACK, ConcurrentReply),
        (scripts.CONC_FAIL, ConcurrentReply),
        (scripts.CONC_NUDGE, ConcurrentReply),
        (scripts.CONC_DROP, ConcurrentReply),
        (scripts.CONC_REDISPATCH, RedispatchReply),
        (lease.RENEW, LeaseReply),
        (lease.RELEASE, LeaseReply),
        (repair_io.PLACE, RepairReply),
        (repair_io.DROP, RepairReply),
        (repair_io.QUARANTINE, RepairReply),
    ],
)
def test_each_script_returns_exactly_what_its_reply_enum_names(script: str, reply: type[IntEnum]) -> None:
    assert {int(v) for v in _INT_RETURN.findall(script)} == {m.value for m in reply}


def test_trigger_replies_with_strings_only() -> None:
    assert not _INT_RETURN.findall(scripts.TRIGGER)
    assert set(_STR_RETURN.findall(scripts.TRIGGER)) == {m.value for m in TriggerReply}


def test_the_reply_values_that_are_not_a_status() -> None:
    # UPSERT replies with a version (>= 1) per schedule, ACQUIRE with an epoch (>= 1):
    # their sentinels must never be a valid version or epoch.
    assert UpsertReply.CONFLICT < 1 and "return -1" in scripts.UPSERT
    assert AcquireReply.HELD < 1 and "return 0" in lease.ACQUIRE


def test_states_are_their_stored_strings() -> None:
    assert STATES == ("due", "running", "paused", "broken", "completed")
    assert json.dumps({ScheduleState.PAUSED: ScheduleState.BROKEN}) == '{"paused": "broken"}'
    assert f"{ScheduleState.DUE}" == "due"


_LITERAL = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_BINDING = re.compile(r"^local [\w, ]+ = (?:(?:KEYS|ARGV)\[\d+\],?\s*)+$")
_CONTINUED = re.compile(r"^\s+(?:(?:KEYS|ARGV)\[\d+\],?\s*)+$")


def _all_scripts() -> dict[str, str]:
    found = {}
    for module in (scripts, lease, repair_io):
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and "redis.call" in value:
                found[f"{module.__name__}.{name}"] = value
    return found


@pytest.mark.parametrize("name", sorted(_all_scripts()))
def test_a_script_names_its_keys_and_arguments_once_at_the_top(name: str) -> None:
    """Every ``KEYS[n]``/``ARGV[n]`` is listed in the header, one per line, and bound
    to a local in one block before the body, which then reads by name only."""
    body = _all_scripts()[name]
    lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
    header = [line for line in body.splitlines() if line.startswith("--")]
    used = [i for i, line in enumerate(lines) if _LITERAL.search(line)]
    if not used:
        return
    block = range(used[0], used[-1] + 1)
    assert all(_BINDING.match(lines[i]) or _CONTINUED.match(lines[i]) for i in block), name
    for kind, index in _LITERAL.findall("\n".join(lines)):
        assert any(line.startswith(f"-- {kind}[{index}] - ") for line in header), (name, kind, index)


# -- job.meta["rqbeat"] ---------------------------------------------------------------

FIRE = FireMeta(
    schedule="s1",
    fire_at="2027-01-15T06:00:00.000Z",
    fire_ms=1_799_992_800_000,
    attempt=2,
    epoch=7,
    version="3",
    namespace="ns",
)


def test_the_meta_layout_round_trips_through_json() -> None:
    meta = json.loads(json.dumps(FIRE.to_meta()))  # as RQ stores it
    assert FireMeta.from_meta(meta) == FIRE
    assert meta[META_KEY]["key"] == "s1:1799992800000" == FIRE.key
    # what DESIGN 5.4 promises job code, plus what the ack needs
    assert set(meta[META_KEY]) == {
        "schedule", "fire_at", "fire_ms", "attempt", "key", "epoch", "version", "namespace",
    }  # fmt: skip


def test_the_public_fire_is_read_from_the_same_layout() -> None:
    fire = Fire.from_meta(FIRE.to_meta()[META_KEY])
    assert (fire.schedule, fire.fire_ms, fire.attempt, fire.key, fire.epoch) == (
        "s1",
        FIRE.fire_ms,
        2,
        FIRE.key,
        7,
    )
    assert fire.fire_at.isoformat() == "2027-01-15T06:00:00+00:00"


@pytest.mark.parametrize("meta", [None, {}, {"other": 1}, {META_KEY: "not ours"}, {META_KEY: None}])
def test_a_job_rqbeat_did_not_enqueue_has_no_fire(meta: dict[str, Any] | None) -> None:
    assert FireMeta.from_meta(meta) is None


def test_an_older_layout_without_version_or_namespace_still_reads() -> None:
    raw = {k: v for k, v in FIRE.to_meta()[META_KEY].items() if k not in ("version", "namespace")}
    fire = FireMeta.from_meta({META_KEY: raw})
    assert fire is not None and (fire.version, fire.namespace) == ("", "rqbeat")


@pytest.mark.parametrize(("field", "value"), [("schedule", None), ("fire_ms", "soon"), ("attempt", None)])
def test_a_damaged_layout_is_one_named_error(field: str, value: Any) -> None:
    raw = dict(FIRE.to_meta()[META_KEY])
    if value is None:
        del raw[field]
    else:
        raw[field] = value
    with pytest.raises(CorruptJobMeta, match=field if value is None else "bad value"):
        FireMeta.from_meta({META_KEY: raw})


def test_the_run_fields_dispatch_sets_are_the_ones_every_ending_clears() -> None:
    dispatch_set = set(re.findall(r"'(\w+)', (?:job|queue|epoch|now)\b", scripts.DISPATCH))
    assert set(RUN_FIELDS) - {*STARTED_FIELDS, ENDED_FIELD} <= dispatch_set
    assert f"'{ENDED_FIELD}'" in scripts.NUDGE
    assert set(STARTED_FIELDS) <= set(re.findall(r"'(\w+)', (?:started|worker)\b", scripts.START))
    for body in (scripts.ACK, scripts.RETRY, scripts.MARK_BROKEN, repair_io.PLACE):
        assert lua_list("RUN_FIELDS", RUN_FIELDS) in body
        assert "unpack(RUN_FIELDS)" in body
    assert set(RUN_FIELDS) <= set(IN_FLIGHT_FIELDS)  # what the ack and the watchdog read


def test_dispatch_unpacks_due_rows_in_the_order_due_read_returns_them() -> None:
    assert DECIDED_FROM == DUE_FIELDS
    assert lua_list("FIELDS", DUE_FIELDS) in scripts.DUE_READ
    assert lua_list("FIELDS", UPSERT_READ_FIELDS) in scripts.UPSERT_READ
