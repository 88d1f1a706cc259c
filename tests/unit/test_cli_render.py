"""The CLI's pure parts: text formatting, the history timeline, shape-shared validation."""

from __future__ import annotations

import re
from collections.abc import Callable

import click
import pytest

from scheduler.cli.render import Cell, age, duration, relative, table_lines, toned, wall
from scheduler.cli.rows import Definitions, sort_key
from scheduler.cron import next_fires
from scheduler.errors import RqbeatError
from scheduler.model import Schedule
from scheduler.records import ScheduleRecord, decode_definition, decode_record
from scheduler.store import HistoryEntry
from scheduler.timeline import attempt_of, explain

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize(
    ("delta_ms", "text"),
    [
        (0, "0s"),
        (450, "450ms"),
        (1_000, "1s"),
        (59_999, "59s"),
        (65_000, "1m5s"),
        (3_600_000, "1h"),
        (3_605_000, "1h"),  # two largest units, and no "0m"
        (3_725_000, "1h2m"),
        (90_061_000, "1d1h"),
        (-65_000, "1m5s"),
    ],
)
def test_age(delta_ms: int, text: str) -> None:
    assert age(delta_ms) == text


def test_relative_and_duration() -> None:
    assert relative(10_000, 10_500) == "now"
    assert relative(262_000, 10_000) == "in 4m12s"
    assert relative(10_000, 13_000) == "3s ago"
    assert [duration(ms) for ms in (0, 850, 1_234, 59_900, 184_000)] == [
        "0ms",
        "850ms",
        "1.2s",
        "59.9s",
        "3m4s",
    ]


def test_wall_clock_in_a_timezone() -> None:
    spring = 1_806_195_600_000  # 2027-03-28T01:00:00Z: 03:00 CEST, just after the gap
    assert wall(spring, "Europe/Berlin") == "2027-03-28 03:00:00"
    assert wall(spring, "Europe/Berlin", zone=True) == "2027-03-28 03:00:00 CEST"
    assert wall(spring - 1000, "Europe/Berlin", zone=True) == "2027-03-28 01:59:59 CET"
    assert wall(spring, "UTC", zone=True) == "2027-03-28 01:00:00 UTC"


def test_table_aligns_on_the_visible_text_not_the_escape_codes() -> None:
    rows: list[list[Cell | str]] = [
        ["a", toned("broken"), "x"],
        ["long-id", toned("due"), Cell("succeeded 3s ago", "ok")],
    ]
    lines = table_lines(["ID", "STATE", "LAST"], rows)
    styled = "\n".join(lines)
    assert "\x1b[" in styled  # styles are there; click.echo strips them off a terminal
    plain = [ANSI.sub("", line) for line in lines]
    assert plain == [
        "ID       STATE   LAST",
        "a        broken  x",
        "long-id  due     succeeded 3s ago",
    ]
    assert click.unstyle(styled).splitlines() == plain


def test_every_tone_is_a_style() -> None:
    for state in ("due", "running", "paused", "broken", "succeeded", "failed", "gave_up", "missed"):
        assert toned(state).tone is not None, state
    assert toned("whatever").tone is None


def entry(ms: int, event: str, **fields: str) -> HistoryEntry:
    return HistoryEntry(f"{ms}-0", ms, event, fields)


def test_explain_joins_each_dispatch_to_its_outcome() -> None:
    fire = "2027-01-01T00:00:00.000Z"
    entries = [
        entry(1_000, "dispatched", fire_at=fire, job_id="s-1-1", attempt="1", epoch="3"),
        entry(
            1_400,
            "failed",
            fire_at=fire,
            job_id="s-1-1",
            error="Traceback\n  x\nRuntimeError: boom",
            next_attempt="2",
            retry_at="2027-01-01T00:00:02.000Z",
        ),
        entry(2_000, "dispatched", fire_at=fire, job_id="s-1-2", attempt="2", epoch="3"),
        entry(2_250, "gave_up", fire_at=fire, job_id="s-1-2", error="RuntimeError: boom"),
        entry(3_000, "missed", fire_at=fire, count="3", next_fire_at="2027-01-01T01:00:00.000Z"),
        entry(4_000, "paused", at="x"),
        entry(5_000, "dispatched", fire_at=fire, job_id="s-5-1", attempt="1", epoch="3"),
        entry(6_000, "dispatched", fire_at=fire, job_id="s-6-1", attempt="1", epoch="4"),
    ]
    lines = explain(entries, "s-6-1", lambda ms: f"<{ms}>")
    assert [line.attempt for line in lines] == [1, 1, 2, 2, None, None, 1, 1]
    assert [line.duration_ms for line in lines] == [400, 400, 250, 250, None, None, None, None]
    assert [line.run_outcome for line in lines] == [
        "failed",
        None,
        "gave_up",
        None,
        None,
        None,
        None,
        "in flight",
    ]
    assert lines[0].outcome == "failed"
    assert lines[1].outcome == f"RuntimeError: boom -> retry at <{1_798_761_602_000}>"
    assert lines[3].outcome == "RuntimeError: boom"
    assert lines[4].outcome == f"3 fires dropped by the misfire policy, next fire <{1_798_765_200_000}>"
    assert lines[5].outcome == ""
    assert lines[6].outcome == ""  # no ending recorded and not in flight: unknown, not invented
    assert lines[1].fire_ms == 1_798_761_600_000


def test_a_started_run_shows_its_lateness_and_its_duration_from_start_to_end() -> None:
    fire = "2027-01-01T00:00:00.000Z"  # 1_798_761_600_000
    entries = [
        entry(1_798_761_600_100, "dispatched", fire_at=fire, job_id="s-1-1", attempt="1"),
        entry(
            1_798_761_603_000,
            "succeeded",
            fire_at=fire,
            job_id="s-1-1",
            started_at="2027-01-01T00:00:01.500Z",
            ended_at="2027-01-01T00:00:02.750Z",
            worker="w1",
        ),
        # a plain rq worker's run: no start, so no lateness, and dispatch to ack
        entry(1_798_761_660_100, "dispatched", fire_at=fire, job_id="s-2-1", attempt="1"),
        entry(1_798_761_661_000, "succeeded", fire_at=fire, job_id="s-2-1"),
    ]
    lines = explain(entries, None, str)
    assert [line.lateness_ms for line in lines] == [1_500, 1_500, None, None]
    assert [line.duration_ms for line in lines] == [1_250, 1_250, 900, 900]
    assert [line.worker for line in lines] == ["w1", "w1", None, None]


def test_an_alert_delivery_reads_as_what_went_where() -> None:
    sent = entry(1, "alert_sent", kind="gave_up", recovered="0", url="http://h:1", attempts="2", status="200")
    failed = entry(
        2, "alert_failed", kind="broken", recovered="1", url="http://h:1", attempts="5", error="HTTP 500"
    )
    lines = explain([sent, failed], None, str)
    assert lines[0].outcome == "gave_up -> http://h:1: HTTP 200 (2 attempts)"
    assert lines[1].outcome == "broken recovered -> http://h:1: HTTP 500 (5 attempts)"


def test_attempt_of_a_job_id() -> None:
    assert attempt_of("nightly-report-1798761600000-3") == 3
    assert attempt_of("weird") is None
    assert attempt_of(None) is None


def definition(schedule_id: str, **extra: object) -> str:
    return Schedule.from_dict({"id": schedule_id, "target": "app.jobs.run", **extra}).to_json()


CASES = [
    ("s-1", definition("s-1", cron="*/5 * * * *")),
    ("s-2", definition("s-2", cron="*/5 * * * *")),  # same shape as s-1
    ("s-3", definition("s-3", every="90s", args=["s-3"], kwargs={"id": "s-3"})),  # id in the payload
    ("s-4", definition("s-4", every="90s", args=["s-4"], kwargs={"id": "s-4"})),
    ("h-1", definition("h-1", cron="H H * * *")),  # hashed by id: never shared
    ("h-2", definition("h-2", cron="H H * * *")),
    ("b-1", '{"cron":"61 * * * *","id":"b-1","target":"app.jobs.run"}'),  # names its id: not shared
    ("b-2", '{"cron":"61 * * * *","id":"b-2","target":"app.jobs.run"}'),
    ("b-3", '{"cron":"61 * * * *","target":"app.jobs.run"}'),  # the stored form: shared, as an error
    ("b-4", '{"cron":"61 * * * *","target":"app.jobs.run"}'),
    ("m-1", '{"cron":"* * * * *","id":"other","target":"app.jobs.run"}'),  # id does not match the key
    ("bad id!", '{"cron":"* * * * *","id":"bad id!","target":"app.jobs.run"}'),
    ("j-1", "{oops"),
    ("n-1", None),
]


def outcome(decode: Callable[[str, str | None], Schedule], schedule_id: str, text: str | None) -> object:
    try:
        schedule = decode(schedule_id, text)
    except (RqbeatError, ValueError) as exc:
        return ("error", str(exc))
    assert isinstance(schedule, Schedule)
    return ("ok", schedule.to_dict(), schedule.id, next_fires(schedule.trigger, 0, 3))


def test_shape_shared_validation_decides_as_a_full_decode_does() -> None:
    definitions = Definitions()
    for schedule_id, text in CASES * 2:  # the second pass is served from the shapes
        assert outcome(definitions.decode, schedule_id, text) == outcome(decode_definition, schedule_id, text)
    # shapes: s-1/s-2, b-3/b-4 and "{oops"; s-3 and s-4 name "id" (a kwargs key), the
    # H expressions are hashed by id, b-1/b-2 name their id: all decoded in full
    assert len(definitions._shapes) == 3


def test_shape_shared_records_equal_full_ones() -> None:
    definitions = Definitions()
    for schedule_id, text in CASES:
        raw: dict[bytes | str, bytes | str] = {"state": "due", "version": "1"}
        if text is not None:
            raw["definition"] = text
        assert decode_record(schedule_id, raw, 5, decode=definitions.decode) == decode_record(
            schedule_id, raw, 5
        )


def test_sort_key_soonest_first_then_broken_then_paused() -> None:
    def record(
        schedule_id: str, state: str, due_ms: int | None = None, job_id: str | None = None
    ) -> ScheduleRecord:
        raw: dict[bytes | str, bytes | str] = {
            "state": state,
            "definition": definition(schedule_id, every="1m"),
            "fire_at": "2027-01-01T00:00:00Z",
        }
        if job_id:
            raw["job_id"] = job_id
        if state == "broken":
            raw["definition"] = "{"
        return decode_record(schedule_id, raw, due_ms)

    records = [
        record("p", "paused"),
        record("b", "broken"),
        record("later", "due", 9_000),
        record("soon", "due", 5_000),
        record("run", "running", job_id="run-1-1"),
        record("p2", "paused", job_id="p2-1-1"),  # paused while its last run is in flight
    ]
    assert [r.id for r in sorted(records, key=sort_key)] == ["run", "soon", "later", "b", "p", "p2"]


def test_json_of_a_definition_is_unchanged_by_sharing() -> None:
    definitions = Definitions()
    first = definitions.decode("s-1", definition("s-1", cron="0 * * * *"))
    second = definitions.decode("s-2", definition("s-2", cron="0 * * * *"))
    assert second.to_json() == first.to_json()
    assert second.to_dict() == {**first.to_dict(), "id": "s-2"}
    assert second is not first
    assert first.id == "s-1"  # the cached template is never changed


def test_a_resume_that_skipped_fires_says_how_many() -> None:
    fire = "2027-01-01T00:00:00.000Z"
    entries = [entry(1_000, "skipped", count="4", fire_at=fire), entry(1_000, "resumed", at="x")]
    lines = explain(entries, None, lambda ms: f"<{ms}>")
    assert lines[0].outcome == "4 fires skipped: pending or due while paused"
    assert lines[0].fire_ms == 1_798_761_600_000
