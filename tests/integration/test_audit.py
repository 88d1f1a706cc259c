"""Audited edits, end to end: every change made through the CLI or the API shows who,
when (Redis time), the version, what changed and the note in ``rqbeat history`` and
``rqbeat log``; a bad --by, --note or --until writes nothing; a pause with an until
is resumed by the leader by itself."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import wait_for
from scheduler.audit import UNTIL_BY, cli_user
from scheduler.clock import iso, parse_iso_ms, redis_now_ms
from scheduler.editlog import read_log
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.protocol import ResumeReply
from scheduler.store import Client
from tests.cli import Invoke, json_of, ok

pytestmark = pytest.mark.integration

K = Keys()
TARGET = "myapp.tasks.reports.daily_summary"


def report(schedule_id: str = "daily-summary", **settings: Any) -> Schedule:
    return Schedule(
        id=schedule_id, target=TARGET, cron="30 6 * * *", timezone="Europe/Berlin", max_attempts=3, **settings
    )


def history_json(rqbeat: Invoke, schedule_id: str) -> list[dict[str, Any]]:
    return list(json_of(rqbeat("history", schedule_id, "--json", "-n", "100")))


def log_json(rqbeat: Invoke, *args: str) -> list[dict[str, Any]]:
    return list(json_of(rqbeat("log", "--json", *args)))


def test_cli_edits_show_who_when_what_in_history_and_log(rqbeat: Invoke, conn: Redis) -> None:
    before = redis_now_ms(conn)
    add = [
        "add",
        "daily-summary",
        TARGET,
        "--cron",
        "30 6 * * *",
        "--tz",
        "Europe/Berlin",
        "--max-attempts",
        "3",
    ]
    ok(rqbeat(*add, "--by", "alice", "--note", "new report"))
    ok(
        rqbeat(
            "set", "daily-summary", "--cron", "0 7 * * *", "--queue", "reports", "--note", "later, own queue"
        )
    )
    ok(rqbeat("pause", "daily-summary", "--note", "warehouse migration", "--by", "bob"))
    ok(rqbeat("resume", "daily-summary", env={"RQBEAT_BY": "carol"}))
    ok(rqbeat("trigger", "daily-summary", "--note", "rerun after the fix"))
    after = redis_now_ms(conn)

    edits = [e for e in history_json(rqbeat, "daily-summary") if e.get("by")]
    assert [(e["event"], e["by"], e["version"]) for e in edits] == [
        ("updated", cli_user(), 2),
        ("paused", "bob", 2),
        ("resumed", "carol", 2),
        ("triggered", cli_user(), 2),
    ]  # the creation is in the edit log only (a stream per new schedule costs memory)
    assert edits[0]["changed"] == 'cron: "30 6 * * *" -> "0 7 * * *"; queue: - -> "reports"'
    assert [e.get("note") for e in edits] == [
        "later, own queue",
        "warehouse migration",
        None,
        "rerun after the fix",
    ]
    assert all(before <= parse_iso_ms(e["at"]) <= after for e in edits)  # Redis time

    text = ok(rqbeat("history", "daily-summary")).splitlines()
    assert text[0].split()[:4] == ["AT", "(Europe/Berlin)", "EVENT", "BY"]
    paused_line = next(line for line in text if " paused " in line)
    assert "bob" in paused_line and '"warehouse migration"' in paused_line

    ok(rqbeat("rm", "daily-summary", "--by", "dave", "--note", "moved to the reports service"))
    log = log_json(rqbeat, "--id", "daily-summary")
    assert [(e["event"], e["by"]) for e in log] == [
        ("created", "alice"),
        ("updated", cli_user()),
        ("paused", "bob"),
        ("resumed", "carol"),
        ("triggered", cli_user()),
        ("removed", "dave"),
    ]
    assert [e["version"] for e in log] == [1, 2, 2, 2, 2, 2]
    assert log[0]["note"] == "new report" and log[-1]["note"] == "moved to the reports service"
    assert [e["event"] for e in log_json(rqbeat, "--by", "bob")] == ["paused"]
    assert [e["event"] for e in log_json(rqbeat, "-n", "2")] == ["triggered", "removed"]
    table = ok(rqbeat("log", "--id", "daily-summary")).splitlines()
    assert table[0].split() == ["AT", "(UTC)", "ID", "EVENT", "VERSION", "BY", "CHANGED", "NOTE"]
    assert len(table) == 7 and "moved to the reports service" in table[-1]


def test_log_since_keeps_only_later_edits(rqbeat: Invoke, client: Client, conn: Redis) -> None:
    client.upsert(report("early"), by="deploy-bot")
    cut = redis_now_ms(conn)
    wait_for(lambda: redis_now_ms(conn) > cut, 5, what="Redis time to move on")
    client.upsert(report("late"), by="deploy-bot")
    assert [e["id"] for e in log_json(rqbeat, "--since", iso(cut))] == ["late"]
    assert [e["id"] for e in log_json(rqbeat, "--since", "1h")] == ["early", "late"]
    refused = rqbeat("log", "--since", "yesterday-ish")
    assert refused.exit_code == 2 and "since" in refused.output


def test_api_edits_carry_the_callers_label(client: Client, conn: Redis) -> None:
    client.upsert(report(), by="deploy-bot", note="release 42")
    client.upsert_many([report(), report("weekly-summary")], by="deploy-bot")  # one unchanged: not an edit
    client.edit("daily-summary", {"max_attempts": 5}, note="flaky upstream")
    client.pause("daily-summary", by="oncall-bot")
    client.resume("daily-summary")
    log = read_log(conn, K, 100)
    assert [(e.schedule_id, e.event, e.by, e.version) for e in log] == [
        ("daily-summary", "created", "deploy-bot", "1"),
        ("weekly-summary", "created", "deploy-bot", "1"),
        ("daily-summary", "updated", "api", "2"),
        ("daily-summary", "paused", "oncall-bot", "2"),
        ("daily-summary", "resumed", "api", "2"),
    ]
    assert log[0].note == "release 42" and log[2].changed == "max_attempts: 3 -> 5"
    # backfill (another change) records through the same entry
    assert client.record_edit("daily-summary", "backfill", by="ops", changed="2027-01-01..2027-01-02")
    assert not client.record_edit("nope", "backfill", by="ops")
    entry = client.history("daily-summary")[-1]
    assert (entry.event, entry.fields["by"], entry.fields["changed"]) == (
        "backfill",
        "ops",
        "2027-01-01..2027-01-02",
    )


def test_bad_by_note_or_until_writes_nothing(rqbeat: Invoke, client: Client, conn: Redis) -> None:
    client.upsert(report())
    written = conn.xlen(K.log)
    for args in (
        ["pause", "daily-summary", "--until", "2001-01-01T00:00:00Z"],
        ["pause", "daily-summary", "--until", "soon"],
        ["pause", "daily-summary", "--until", "2099-01-01T00:00:00"],
        ["pause", "daily-summary", "--by", ""],
        ["trigger", "daily-summary", "--note", "x" * 501],
        ["set", "daily-summary", "--queue", "reports", "--by", "a\nb"],
    ):
        result = rqbeat(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, (
            result.output
        )
    record = client.get("daily-summary")
    assert (record.state, record.version, conn.xlen(K.log)) == ("due", 1, written)
    assert conn.zcard(K.paused_until) == 0


def test_pause_until_is_shown_and_a_repause_replaces_it(rqbeat: Invoke, client: Client, conn: Redis) -> None:
    client.upsert(report())
    assert ok(rqbeat("pause", "daily-summary", "--until", "2h", "--note", "db migration")).startswith(
        "paused daily-summary until "
    )
    shown = json_of(rqbeat("show", "daily-summary", "--json"))
    until_ms = parse_iso_ms(shown["paused_until"])
    assert shown["pause_note"] == "db migration" and shown["paused_by"] == cli_user()
    assert conn.zscore(K.paused_until, "daily-summary") == until_ms / 1000
    assert '"db migration"' in ok(rqbeat("ls"))
    assert "pause_note:" in ok(rqbeat("show", "daily-summary"))

    assert ok(rqbeat("pause", "daily-summary")).strip() == "daily-summary was already paused"
    ok(rqbeat("pause", "daily-summary", "--until", "3h"))  # replaces the until (and the note)
    shown = json_of(rqbeat("show", "daily-summary", "--json"))
    assert parse_iso_ms(shown["paused_until"]) > until_ms and shown["pause_note"] is None
    # the leader's resume of the old until is refused: not the lease's token
    assert client.resume_at_until("daily-summary", token="1:gone-leader") is ResumeReply.DEPOSED
    ok(rqbeat("resume", "daily-summary"))
    shown = json_of(rqbeat("show", "daily-summary", "--json"))
    assert (shown["state"], shown["paused_until"], shown["pause_note"]) == ("due", None, None)
    assert conn.zcard(K.paused_until) == 0


def test_a_time_limited_pause_resumes_by_itself(cluster: Cluster, rqbeat: Invoke, conn: Redis) -> None:
    cluster.replica("r1")
    cluster.wait_leader(conn)
    ok(rqbeat("add", "daily-summary", TARGET, "--cron", "30 6 * * *", "--tz", "Europe/Berlin"))
    ok(rqbeat("pause", "daily-summary", "--until", "2s", "--note", "deploy", "--by", "ops"))
    until_ms = parse_iso_ms(json_of(rqbeat("show", "daily-summary", "--json"))["paused_until"])

    def resumed() -> bool:
        return bool(json_of(rqbeat("show", "daily-summary", "--json"))["state"] == "due")

    wait_for(resumed, 30, interval=0.1, what="the leader to end the pause")
    edits = [e for e in history_json(rqbeat, "daily-summary") if e.get("by")]
    assert [(e["event"], e["by"]) for e in edits] == [("paused", "ops"), ("resumed", UNTIL_BY)]
    assert parse_iso_ms(edits[1]["at"]) >= until_ms  # not before its time (Redis time)
    assert [e["by"] for e in log_json(rqbeat, "--id", "daily-summary")] == [cli_user(), "ops", UNTIL_BY]
    assert conn.zcard(K.paused_until) == 0
