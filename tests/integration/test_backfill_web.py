"""The dashboard's "Backfill a window" action: behind the same credentials, CSRF and
version check as pause/resume/trigger, through :meth:`Client.backfill` (the CLI's
path), refusing bad input with nothing written."""

from __future__ import annotations

import pytest
from redis import Redis

from scheduler import Client, Schedule
from scheduler.clock import iso, redis_now_ms
from scheduler.protocol import BackfillOverlap, BackfillState
from tests.integration.test_web import TOKEN, csrf_of, web
from tests.keyspace import snapshot

pytestmark = pytest.mark.integration

SID = "daily-summary"
HOUR_MS = 3_600_000


def test_the_schedule_page_starts_a_backfill_and_shows_its_progress(redis_url: str, conn: Redis) -> None:
    api = Client(conn)
    api.upsert(
        Schedule(
            id=SID, target="tests.jobs.record", cron="0 * * * *", timezone="Asia/Kolkata", max_attempts=2
        )
    )
    browser = web(redis_url, allow_actions=True, token=TOKEN)
    page = browser.get(f"/schedule/{SID}").get_data(as_text=True)
    assert 'id="do-backfill"' not in page  # locked until the token is given
    csrf = csrf_of(browser, f"/schedule/{SID}")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    end = redis_now_ms(conn) // HOUR_MS * HOUR_MS
    form = {"csrf": csrf, "version": "1", "from": iso(end - 5 * HOUR_MS), "to": iso(end), "overlap": "skip"}

    before = snapshot(conn)
    for bad, message in [
        ({"from": "soon"}, "from: must be an ISO time"),
        ({"from": iso(end), "to": iso(end - HOUR_MS)}, "must be before --to"),
        ({"to": iso(end + 2 * HOUR_MS)}, "is in the future"),
        ({"overlap": "sometimes"}, "overlap must be one of allow, skip"),
    ]:
        response = browser.post(f"/schedule/{SID}/backfill", data=form | bad, headers=bearer)
        assert response.status_code == 409 and message in response.get_data(as_text=True), bad
        assert snapshot(conn) == before, bad
    stale = browser.post(f"/schedule/{SID}/backfill", data=form | {"version": "0"}, headers=bearer)
    assert stale.status_code == 409 and "changed meanwhile" in stale.get_data(as_text=True)
    assert snapshot(conn) == before
    assert browser.post(f"/schedule/{SID}/backfill", data=form).status_code == 401  # no credentials
    assert (
        browser.post(f"/schedule/{SID}/backfill", data=form | {"csrf": "x"}, headers=bearer).status_code
        == 403
    )
    assert snapshot(conn) == before

    response = browser.post(f"/schedule/{SID}/backfill", data=form, headers=bearer)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/schedule/{SID}?done=backfilling"
    status = api.backfill_status(SID)
    assert status is not None
    assert (status.state, status.total, status.overlap, status.by) == (
        BackfillState.ACTIVE,
        5,
        BackfillOverlap.SKIP,
        "web-token",  # the acting user: the token names no person
    )
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert "started a backfill of daily-summary" in page
    assert f"backfill {SID} [" in page and "0/5 fires" in page
    assert browser.get(f"/api/schedule/{SID}").get_json()["backfill"]["fires"] == 5
    again = browser.post(f"/schedule/{SID}/backfill", data=form, headers=bearer)
    assert again.status_code == 409 and "has a backfill running" in again.get_data(as_text=True)
