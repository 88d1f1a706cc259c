"""The dashboard's pure parts: triggers in words, DST notes on next fires, the
credential and CSRF checks, list query parsing, and `rqbeat web` without Flask."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from scheduler.clock import parse_iso_ms
from scheduler.errors import ConfigError
from scheduler.model import Schedule
from scheduler.web import present
from scheduler.web.guard import ActionAuth, csrf_ok, same_origin
from scheduler.web.listing import BadQuery, Position, Query, Source
from scheduler.web.words import in_words


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("30 2 * * *", "at 02:30 every day"),
        ("30 2 * * 1-5", "at 02:30 on Mon-Fri"),
        ("0 9 1 * *", "at 09:00 on day 1 of the month"),
        ("*/15 * * * *", "every 15 minutes"),
        ("* * * * *", "every minute"),
        ("5 */2 * * *", "at minute 5 past every 2 hours every day"),
        ("0 0 1 1 *", "at 00:00 on day 1 of the month in Jan"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("*/5 * * * 1-5", "every 5 minutes on Mon-Fri"),
        ("@hourly", "every hour, on the hour"),
        ("H 3 * * *", "cron 'H 3 * * *' UTC (as"),
    ],
)
def test_cron_in_words(cron: str, words: str) -> None:
    assert in_words(Schedule(id="x", target="a.b", cron=cron)).startswith(words)


def test_interval_in_words() -> None:
    assert in_words(Schedule(id="x", target="a.b", every_ms=90_000)) == "every 1m30s"


def test_next_fires_note_the_dst_transitions() -> None:
    daily = Schedule(id="x", target="a.b", cron="30 2 * * *", timezone="Europe/Berlin")
    spring = present.fires(daily, parse_iso_ms("2027-03-26T12:00:00Z"), 3)
    assert [f["local"] for f in spring] == [
        "2027-03-27 02:30:00 CET",
        "2027-03-28 03:00:00 CEST",  # 02:30 does not exist that night: fires at the change
        "2027-03-29 02:30:00 CEST",
    ]
    assert [bool(f["note"]) for f in spring] == [False, True, False]
    assert "skipped wall time" in spring[1]["note"]
    early = Schedule(id="x", target="a.b", cron="0 4 * * *", timezone="Europe/Berlin")
    notes = [f["note"] for f in present.fires(early, parse_iso_ms("2027-03-26T12:00:00Z"), 3)]
    assert notes == ["", "after the DST change (UTC+01:00 → UTC+02:00)", ""]
    quarter = Schedule(id="x", target="a.b", cron="*/30 * * * *", timezone="Europe/Berlin")
    autumn = present.fires(quarter, parse_iso_ms("2027-10-31T00:00:00Z"), 3)  # 02:00 CEST
    assert [f["local"] for f in autumn] == [
        "2027-10-31 02:30:00 CEST",
        "2027-10-31 02:00:00 CET",
        "2027-10-31 02:30:00 CET",
    ]
    assert "first pass" in autumn[0]["note"] and "second pass" in autumn[1]["note"]


def test_relative_times() -> None:
    assert present.relative(10_000, 10_500) == "now"
    assert present.relative(70_000 + 252_000, 70_000) == "in 4m12s"
    assert present.relative(0, 3_000) == "3s ago"


def test_actions_need_credentials() -> None:
    with pytest.raises(ConfigError, match="RQBEAT_WEB_TOKEN"):
        ActionAuth(allow_actions=True)
    with pytest.raises(ConfigError, match="both"):
        ActionAuth(username="ops")
    auth = ActionAuth(allow_actions=True, token="s3cret")
    assert auth.check_bearer("Bearer s3cret") and not auth.check_bearer("Bearer nope")
    assert not auth.check_bearer("Basic s3cret") and not auth.check_bearer(None)
    cookie = auth.unlock_value()
    assert "s3cret" not in cookie and auth.check_unlock(cookie)
    assert not ActionAuth(allow_actions=True, token="other").check_unlock(cookie)  # a new token logs out
    assert not auth.check_unlock(cookie.split(".")[0] + ".forged")
    assert not auth.check_basic("ops", "s3cret")  # no basic credentials configured


def test_csrf_and_origin_checks() -> None:
    assert csrf_ok("abc", "abc")
    assert not csrf_ok("abc", "abd") and not csrf_ok(None, None) and not csrf_ok("", "")
    assert same_origin(None, "http://127.0.0.1:9182/")
    assert same_origin("http://127.0.0.1:9182", "http://127.0.0.1:9182/")
    assert not same_origin("http://evil.example", "http://127.0.0.1:9182/")
    assert not same_origin("http://127.0.0.1:9183", "http://127.0.0.1:9182/")
    assert same_origin("https://ops.example", "http://ops.example/")  # TLS ended by a proxy


def test_list_query_parsing() -> None:
    assert Query.parse({}).sources() == (Source.RUNNING, Source.DUE, Source.IDLE)
    assert Query.parse({"prefix": "ab"}).sources() == (Source.MATCH,)
    assert Query.parse({"state": "paused"}).sources() == (Source.RUNNING, Source.IDLE)
    assert Query.parse({}).start() == Position(source=Source.RUNNING)
    assert Query.parse({"cursor": "idle:nightly", "state": "paused"}).start() == Position(
        source=Source.IDLE, member="nightly"
    )
    assert Query.parse({"state": "due", "size": "20"}).params(cursor="due:1798761600:s-01") == {
        "state": "due",
        "size": "20",
        "cursor": "due:1798761600:s-01",
    }
    bad_cursors = ["nope", "zzz:1", "due:20", "due:1e5:a b", "idle:1.5:x", "match:x", "running:nan:a"]
    for bad in [{"state": "x"}, {"size": "500"}, {"prefix": "a b"}, *({"cursor": c} for c in bad_cursors)]:
        with pytest.raises(BadQuery):
            Query.parse(bad)


@pytest.mark.parametrize(
    "position",
    [
        Position(source=Source.DUE, score="1798761600.123", member="bulk-000120"),
        Position(source=Source.RUNNING, score="1.5e-05", member="a_b-C"),
        Position(source=Source.DUE, score="-inf", member="x"),
        Position(source=Source.IDLE, member="held"),
        Position(source=Source.MATCH, scan=8123, member="bulk-004321"),
        Position(source=Source.MATCH, scan=0),
    ],
)
def test_a_cursor_reads_back_as_the_position_it_was_made_from(position: Position) -> None:
    assert Position.parse(position.cursor()) == position


def test_web_without_flask_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler.cli.app import cli  # noqa: PLC0415 - imported with the real modules first

    for name in [m for m in sys.modules if m == "flask" or m.startswith(("flask.", "scheduler.web"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "flask", None)  # import flask -> ImportError
    result = CliRunner().invoke(cli, ["web"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: rqbeat web needs Flask: pip install 'rqbeat[web]'"
