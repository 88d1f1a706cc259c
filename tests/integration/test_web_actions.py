"""The dashboard's actions against an edit that lands meanwhile: the version the page
showed is checked by the store's script in the same step as its write (not read by the
web layer first), so the action is refused with a message and nothing is written."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from scheduler import Client, Schedule, store
from scheduler.clock import redis_now_ms
from scheduler.errors import StaleVersion
from scheduler.keys import Keys
from scheduler.redisconf import RedisSettings
from scheduler.web import ActionAuth, WebConfig, create_app
from tests.cli import Invoke, ok

pytestmark = pytest.mark.integration

TOKEN = "t0ken-for-action-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
KEYS = Keys()


def summary(schedule_id: str = "daily-summary", *, description: str = "sales to the ops channel") -> Schedule:
    return Schedule(
        id=schedule_id,
        target="myapp.tasks.reports.daily_summary",
        cron="30 6 * * 1-5",
        timezone="Europe/Berlin",
        queue="reports",
        max_attempts=3,
        description=description,
    )


@pytest.fixture
def web(redis_url: str) -> FlaskClient:
    auth = ActionAuth(allow_actions=True, token=TOKEN)
    app = create_app(WebConfig(redis=RedisSettings(url=redis_url), auth=auth))
    app.testing = True
    return app.test_client()


def form_of(web: FlaskClient, schedule_id: str) -> dict[str, str]:
    """The CSRF value and the version the schedule page put in its action forms."""
    html = web.get(f"/schedule/{schedule_id}", headers=BEARER).get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    version = re.search(r'name="version" value="([^"]+)"', html)
    assert csrf and version, "no action form on the page"
    return {"csrf": csrf.group(1), "version": version.group(1)}


def snapshot(conn: Redis, schedule_id: str) -> tuple[Any, ...]:
    """Everything an action could write for ``schedule_id``."""
    return (
        conn.hgetall(KEYS.schedule(schedule_id)),
        conn.xrange(KEYS.history(schedule_id)),
        conn.zscore(KEYS.due, schedule_id),
        conn.zscore(KEYS.running, schedule_id),
        conn.get(KEYS.revision),
    )


def prepare(client: Client, action: str) -> None:
    client.upsert(summary())
    if action == "resume":
        client.pause("daily-summary")


@pytest.mark.parametrize("action", ["pause", "resume", "trigger"])
def test_an_edit_between_page_load_and_action_refuses_it_and_writes_nothing(
    action: str, client: Client, conn: Redis, web: FlaskClient, rqbeat: Invoke
) -> None:
    prepare(client, action)
    form = form_of(web, "daily-summary")
    ok(rqbeat("set", "daily-summary", "--description", "sales and returns to the ops channel"))
    before = snapshot(conn, "daily-summary")

    response = web.post(f"/schedule/daily-summary/{action}", data=form, headers=BEARER)

    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert re.search(r"changed meanwhile \(version 2 now, the page showed 1\); nothing was done", html)
    assert snapshot(conn, "daily-summary") == before
    # the page that says so shows the new version: acting from it works
    again = web.post(f"/schedule/daily-summary/{action}", data=form_of(web, "daily-summary"), headers=BEARER)
    assert again.status_code == 303, again.get_data(as_text=True)


@pytest.mark.parametrize("action", ["pause", "resume", "trigger"])
def test_an_edit_after_the_store_read_but_before_its_write_is_caught_by_the_write(
    action: str,
    client: Client,
    conn: Redis,
    web: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The edit lands inside the action, after every read it makes before writing: a
    check done by reading first (in the web layer or the store) would let it through."""
    prepare(client, action)
    form = form_of(web, "daily-summary")
    other = Client(conn)  # another writer: the web app has connections of its own
    edits: list[int] = []

    def now_then_edit(on: Redis) -> int:
        # the store reads Redis time right before each script: the edit lands then
        if not edits:
            edits.append(1)
            other.edit("daily-summary", {"description": "edited while the action ran"})
        return redis_now_ms(on)

    monkeypatch.setattr(store, "redis_now_ms", now_then_edit)
    history_before: list[Any] = conn.xrange(KEYS.history("daily-summary"))  # type: ignore[assignment]
    state_before = client.get("daily-summary").state

    response = web.post(f"/schedule/daily-summary/{action}", data=form, headers=BEARER)

    assert edits, "the concurrent edit did not happen"
    assert response.status_code == 409
    assert "changed meanwhile (version 2 now, the page showed 1)" in response.get_data(as_text=True)
    record = client.get("daily-summary")
    assert record.version == 2 and record.state == state_before
    entries: list[tuple[bytes, dict[bytes, bytes]]] = conn.xrange(KEYS.history("daily-summary"))  # type: ignore[assignment]
    added = entries[len(history_before) :]
    # only the concurrent edit's own audit entry: no paused/resumed/triggered
    assert [fields[b"event"] for _, fields in added] == [b"updated"]


def test_a_form_without_a_version_is_refused(client: Client, conn: Redis, web: FlaskClient) -> None:
    client.upsert(summary())
    form = form_of(web, "daily-summary")
    before = snapshot(conn, "daily-summary")
    for version in ("", "x1", "9" * 40):
        response = web.post(
            "/schedule/daily-summary/pause", data={**form, "version": version}, headers=BEARER
        )
        assert response.status_code == 409, version
        assert "changed meanwhile (version 1 now" in response.get_data(as_text=True)
    assert snapshot(conn, "daily-summary") == before


@pytest.mark.parametrize("action", ["pause", "resume", "trigger"])
def test_the_store_compare_and_set_of_each_action(action: str, client: Client, conn: Redis) -> None:
    prepare(client, action)
    act: dict[str, Callable[..., Any]] = {
        "pause": client.pause,
        "resume": client.resume,
        "trigger": client.trigger,
    }
    before = snapshot(conn, "daily-summary")
    with pytest.raises(StaleVersion) as refused:
        act[action]("daily-summary", version=7)
    assert (refused.value.expected, refused.value.found) == (7, 1)
    assert "nothing was written" in str(refused.value)
    assert snapshot(conn, "daily-summary") == before
    act[action]("daily-summary", version=1)
    assert snapshot(conn, "daily-summary") != before
