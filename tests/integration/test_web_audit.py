"""The dashboard's pause with a note and an until, and the acting user on every
action (Flask's test client against the private Redis, as tests/integration/test_web.py)."""

from __future__ import annotations

import base64

import pytest
from redis import Redis

from scheduler import Client, Schedule
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.editlog import read_log
from scheduler.keys import Keys
from tests.integration.test_web import TOKEN, XSS, csrf_of, web

pytestmark = pytest.mark.integration

BASIC = {"Authorization": "Basic " + base64.b64encode(b"ops-alice:pw-basic").decode()}


def seed(conn: Redis) -> Client:
    client = Client(conn)
    client.upsert(
        Schedule(
            id="daily-summary",
            target="myapp.tasks.reports.daily_summary",
            cron="30 6 * * *",
            timezone="Europe/Berlin",
            max_attempts=3,
        )
    )
    return client


def test_pause_takes_a_note_and_an_until_and_records_the_basic_user(redis_url: str, conn: Redis) -> None:
    api = seed(conn)
    browser = web(redis_url, allow_actions=True, username="ops-alice", password="pw-basic")
    page = browser.get("/schedule/daily-summary", headers=BASIC).get_data(as_text=True)
    assert 'id="pause-note"' in page and 'id="pause-until"' in page
    form = {"csrf": csrf_of(browser, "/schedule/daily-summary"), "version": "1"}
    before = redis_now_ms(conn)
    response = browser.post(
        "/schedule/daily-summary/pause", data={**form, "note": XSS, "until": "2h"}, headers=BASIC
    )
    assert response.status_code == 303
    record = api.get("daily-summary")
    until_ms = parse_iso_ms(record.raw["paused_until"])
    assert record.state == "paused" and before + 7_200_000 <= until_ms <= redis_now_ms(conn) + 7_200_000
    assert (record.raw["pause_note"], record.raw["paused_by"]) == (XSS, "ops-alice")

    html = browser.get("/schedule/daily-summary").get_data(as_text=True)
    assert 'id="pause"' in html and "by ops-alice" in html and record.raw["paused_until"] in html
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html  # the note stays text
    data = browser.get("/api/schedule/daily-summary").get_json()
    assert data["pause"]["note"] == XSS and data["pause"]["by"] == "ops-alice"
    assert [(h["event"], h["by"]) for h in data["history"]] == [("paused", "ops-alice")]

    assert browser.post("/schedule/daily-summary/resume", data=form, headers=BASIC).status_code == 303
    log = read_log(conn, Keys(), 10)
    assert [(e.event, e.by) for e in log] == [
        ("created", "api"),
        ("paused", "ops-alice"),
        ("resumed", "ops-alice"),
    ]
    assert log[1].note == XSS and log[1].extra["until"] == record.raw["paused_until"]


def test_a_token_action_is_by_web_token_and_a_bad_until_writes_nothing(redis_url: str, conn: Redis) -> None:
    api = seed(conn)
    browser = web(redis_url, allow_actions=True, token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    form = {"csrf": csrf_of(browser, "/schedule/daily-summary"), "version": "1"}
    for until in ("yesterday", "2001-01-01T00:00:00Z"):
        response = browser.post(
            "/schedule/daily-summary/pause", data={**form, "until": until}, headers=bearer
        )
        assert response.status_code == 409 and "until" in response.get_data(as_text=True)
    assert api.get("daily-summary").state == "due" and len(read_log(conn, Keys(), 10)) == 1
    response = browser.post("/schedule/daily-summary/trigger", data={**form, "note": "rerun"}, headers=bearer)
    assert response.status_code == 303
    entry = api.history("daily-summary")[-1]
    assert (entry.event, entry.fields["by"], entry.fields["note"]) == ("triggered", "web-token", "rerun")
