"""The dashboard's routes through Flask's test client, against the private Redis:
the list (paging, filters, search), a schedule page, the cluster panel, the actions
(auth, CSRF, stale versions), the headers and the masking of secrets."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from redis import Redis

from scheduler import Client, Schedule
from scheduler.errors import ConfigError
from scheduler.redisconf import RedisSettings
from scheduler.web import ActionAuth, WebConfig, create_app, make_blueprint
from scheduler.web.guard import CSRF_COOKIE, UNLOCK_COOKIE

pytestmark = pytest.mark.integration

TOKEN = "t0ken-for-tests"
XSS = "<img src=x onerror=alert(1)>"


def web(
    redis_url: str,
    *,
    allow_actions: bool = False,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> FlaskClient:
    auth = ActionAuth(allow_actions=allow_actions, token=token, username=username, password=password)
    config = WebConfig(redis=RedisSettings(url=redis_url), auth=auth)
    app = create_app(config)
    app.testing = True
    return app.test_client()


def seed(conn: Redis, n: int) -> Client:
    client = Client(conn)
    client.upsert_many(
        [Schedule(id=f"s-{i:04d}", target="tests.jobs.record", cron="0 0 1 1 *") for i in range(n)]
    )
    return client


def ids_in(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)"', html)


def csrf_of(client: FlaskClient, path: str) -> str:
    """The CSRF value the page put in its forms (and its cookie)."""
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    cookie = client.get_cookie(CSRF_COOKIE)
    assert cookie is not None and cookie.value == match.group(1)
    return match.group(1)


def test_list_pages_through_every_schedule_once(redis_url: str, conn: Redis) -> None:
    seed(conn, 120)
    client = web(redis_url)
    seen: list[str] = []
    path = "/?size=50"
    pages = 0
    while path:
        response = client.get(path)
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        seen += ids_in(html)
        pages += 1
        match = re.search(r'id="next-page" rel="next" href="([^"]+)"', html)
        path = match.group(1).replace("&amp;", "&") if match else ""
    assert pages == 3
    assert sorted(seen) == [f"s-{i:04d}" for i in range(120)]


def page_through(client: FlaskClient, query: str) -> list[list[str]]:
    """The ids of every page of ``query``, following the next-page cursors."""
    pages: list[list[str]] = []
    cursor: str | None = ""
    while cursor is not None:
        data = client.get(f"/api/schedules?{query}&cursor={cursor}").get_json()
        pages.append([row["id"] for row in data["schedules"]])
        cursor = data["next_cursor"]
    return pages


def test_paging_splits_a_set_slice_between_pages(redis_url: str, conn: Redis) -> None:
    client_api = seed(conn, 300)
    for i in range(0, 240, 2):
        client_api.pause(f"s-{i:04d}")
    client = web(redis_url)
    paused = [f"s-{i:04d}" for i in range(0, 240, 2)]
    pages = page_through(client, "state=paused&size=50")
    assert [len(p) for p in pages if p] == [50, 50, 20]
    assert sorted(i for page in pages for i in page) == paused
    found = [i for page in page_through(client, "prefix=s-01&size=30") for i in page]
    assert sorted(found) == [f"s-01{i:02d}" for i in range(100)]


def test_list_filters_by_state_queue_owner_and_prefix(redis_url: str, conn: Redis) -> None:
    client_api = seed(conn, 30)
    client_api.upsert(Schedule(id="mail-1", target="tests.jobs.record", every_ms=60_000, queue="mail"))
    client_api.upsert(Schedule(id="mail-2", target="tests.jobs.record", every_ms=60_000, owner="apply:ops"))
    client_api.pause("s-0007")
    client = web(redis_url)

    def ids(query: str) -> set[str]:
        response = client.get(f"/api/schedules?{query}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return {row["id"] for row in response.get_json()["schedules"]}

    assert ids("state=paused") == {"s-0007"}
    assert ids("queue=mail") == {"mail-1"}
    assert ids("owner=apply:ops") == {"mail-2"}
    assert ids("prefix=mail") == {"mail-1", "mail-2"}
    assert ids("prefix=s-000&state=due") == {f"s-000{i}" for i in range(10)} - {"s-0007"}
    assert len(ids("state=due")) == 31
    for bad in ("state=nonsense", "prefix=a*b", "size=0", "cursor=due:1&state=paused", "queue=a%20b"):
        assert client.get(f"/?{bad}").status_code == 400, bad


def test_list_row_shows_trigger_state_next_fire_and_last_result(redis_url: str, conn: Redis) -> None:
    Client(conn).upsert(
        Schedule(id="nightly", target="tests.jobs.record", cron="30 2 * * 1-5", timezone="Europe/Berlin")
    )
    response = web(redis_url).get("/api/schedules")
    (row,) = response.get_json()["schedules"]
    assert row["words"] == "at 02:30 on Mon-Fri"
    assert row["trigger"] == "30 2 * * 1-5"
    assert row["timezone"] == "Europe/Berlin"
    assert row["state"] == "due"
    assert row["next"]["iso"].endswith("Z") and row["next"]["relative"].startswith("in ")
    html = web(redis_url).get("/").get_data(as_text=True)
    assert 'class="state state-due"' in html and "at 02:30 on Mon-Fri" in html


def test_schedule_page_shows_definition_next_fires_and_history(redis_url: str, conn: Redis) -> None:
    client_api = Client(conn)
    client_api.upsert(
        Schedule(id="nightly", target="tests.jobs.record", cron="30 2 * * *", timezone="Europe/Berlin")
    )
    client_api.pause("nightly")
    response = web(redis_url).get("/schedule/nightly")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "tests.jobs.record" in html and "Europe/Berlin" in html
    assert html.count('<td data-label="Your time">') == 10
    assert '<span class="event">paused</span>' in html
    assert "Read-only" in html and 'name="version"' not in html
    forged = web(redis_url).get("/schedule/nightly?done=%3Cscript%3E").get_data(as_text=True)
    assert "<script>" not in forged and 'id="message"' not in forged
    data = web(redis_url).get("/api/schedule/nightly").get_json()
    assert data["state"] == "paused" and len(data["fires"]) == 10
    assert [h["event"] for h in data["history"]] == ["paused"]


def test_unknown_or_invalid_schedule_is_404(redis_url: str) -> None:
    client = web(redis_url)
    assert client.get("/schedule/nope").status_code == 404
    assert client.get("/schedule/bad%20id").status_code == 404
    assert client.get("/api/schedule/nope").get_json() == {"error": "no schedule with id 'nope'"}


def test_every_response_carries_the_security_headers(redis_url: str, conn: Redis) -> None:
    seed(conn, 1)
    client = web(redis_url)
    for path in ("/", "/schedule/s-0000", "/cluster", "/api/schedules", "/api/cluster", "/schedule/nope"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert headers["X-Content-Type-Options"] == "nosniff"
    html = client.get("/").get_data(as_text=True)
    assert "<script>" not in html and " on" + "click=" not in html  # no inline script anywhere


def test_untrusted_text_stays_text(redis_url: str, conn: Redis) -> None:
    Client(conn).upsert(
        Schedule(id="xss", target="tests.jobs.fail", args=(XSS,), every_ms=60_000, description=XSS)
    )
    conn.hset("rqbeat:schedule:xss", mapping={"last_result": "failed", "last_error": f"RuntimeError: {XSS}"})
    client = web(redis_url)
    for path in ("/", "/schedule/xss"):
        html = client.get(path).get_data(as_text=True)
        assert XSS not in html, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in html or "\\u003cimg" in html, path


def test_cluster_panel_masks_the_redis_password(redis_url: str, conn: Redis) -> None:
    conn.acl_setuser(
        "webtest", enabled=True, passwords=["+s3cret-pw"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    try:
        url = redis_url.replace("redis://", "redis://webtest:s3cret-pw@")
        response = web(url).get("/cluster")
        html = response.get_data(as_text=True)
        assert response.status_code == 200
        assert "s3cret-pw" not in html and "webtest:***@" in html
        assert "s3cret-pw" not in web(url).get("/api/cluster").get_data(as_text=True)
    finally:
        conn.acl_deluser("webtest")


def test_redis_down_is_a_503_without_the_password(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    dead = f"redis://user:s3cret-pw@127.0.0.1:{port + 1}/0"  # nothing listens there
    for path in ("/", "/api/schedules"):
        response = web(dead).get(path)
        assert response.status_code == 503
        body = response.get_data(as_text=True)
        assert "s3cret-pw" not in body and "user:***@" in body


def test_actions_are_refused_when_read_only(redis_url: str, conn: Redis) -> None:
    seed(conn, 1)
    client = web(redis_url)
    client.get("/schedule/s-0000")  # sets the CSRF cookie; a read-only page has no forms
    cookie = client.get_cookie(CSRF_COOKIE)
    assert cookie is not None
    response = client.post("/schedule/s-0000/pause", data={"csrf": cookie.value, "version": "1"})
    assert response.status_code == 403
    assert Client(conn).get("s-0000").state == "due"


def test_actions_need_credentials_csrf_and_the_shown_version(redis_url: str, conn: Redis) -> None:
    client_api = seed(conn, 1)
    client = web(redis_url, allow_actions=True, token=TOKEN)
    csrf = csrf_of(client, "/schedule/s-0000")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    form = {"csrf": csrf, "version": "1"}

    assert client.post("/schedule/s-0000/pause", data=form).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/schedule/s-0000/pause", data=form, headers=wrong).status_code == 401
    assert client.post("/schedule/s-0000/pause", data={"version": "1"}, headers=bearer).status_code == 403
    forged = {**form, "csrf": "forged"}
    assert client.post("/schedule/s-0000/pause", data=forged, headers=bearer).status_code == 403
    other_site = {**bearer, "Origin": "https://evil.example"}
    assert client.post("/schedule/s-0000/pause", data=form, headers=other_site).status_code == 403
    assert client_api.get("s-0000").state == "due"

    stale = {**form, "version": "0"}
    response = client.post("/schedule/s-0000/pause", data=stale, headers=bearer)
    assert response.status_code == 409
    assert "changed meanwhile" in response.get_data(as_text=True)
    assert client_api.get("s-0000").state == "due"

    response = client.post("/schedule/s-0000/pause", data=form, headers=bearer)
    assert response.status_code == 303  # to the schedule page: a reload does not post again
    assert response.headers["Location"] == "/schedule/s-0000?done=paused"
    assert "paused s-0000" in client.get(response.headers["Location"]).get_data(as_text=True)
    assert client_api.get("s-0000").state == "paused"
    response = client.post("/schedule/s-0000/trigger", data=form, headers=bearer)
    assert response.status_code == 409 and "only a due schedule" in response.get_data(as_text=True)
    assert client.post("/schedule/s-0000/resume", data=form, headers=bearer).status_code == 303
    assert client.post("/schedule/s-0000/trigger", data=form, headers=bearer).status_code == 303
    assert client.post("/schedule/s-0000/explode", data=form, headers=bearer).status_code == 404
    events = [e.event for e in client_api.history("s-0000")]
    assert events == ["paused", "resumed", "triggered"]


def test_the_token_form_unlocks_the_browser(redis_url: str, conn: Redis) -> None:
    seed(conn, 1)
    client = web(redis_url, allow_actions=True, token=TOKEN)
    csrf = csrf_of(client, "/schedule/s-0000")
    assert 'name="token"' in client.get("/schedule/s-0000").get_data(as_text=True)
    assert client.post("/unlock", data={"csrf": csrf, "token": "wrong"}).status_code == 401
    assert client.get_cookie(UNLOCK_COOKIE) is None
    response = client.post("/unlock", data={"csrf": csrf, "token": TOKEN, "next": "/schedule/s-0000"})
    assert response.status_code == 303 and response.headers["Location"] == "/schedule/s-0000"
    cookie = client.get_cookie(UNLOCK_COOKIE)
    assert cookie is not None and TOKEN not in cookie.value
    html = client.get("/schedule/s-0000").get_data(as_text=True)
    assert 'id="do-pause"' in html and TOKEN not in html
    response = client.post("/schedule/s-0000/pause", data={"csrf": csrf, "version": "1"})
    assert response.status_code == 303
    assert Client(conn).get("s-0000").state == "paused"


def test_basic_credentials_unlock_actions(redis_url: str, conn: Redis) -> None:
    seed(conn, 1)
    client = web(redis_url, allow_actions=True, username="ops", password="pw-basic")
    csrf = csrf_of(client, "/schedule/s-0000")
    response = client.post("/schedule/s-0000/pause", data={"csrf": csrf, "version": "1"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    creds = base64.b64encode(b"ops:pw-basic").decode()
    response = client.post(
        "/schedule/s-0000/pause",
        data={"csrf": csrf, "version": "1"},
        headers={"Authorization": f"Basic {creds}"},
        follow_redirects=True,
    )
    assert response.status_code == 200 and "paused s-0000" in response.get_data(as_text=True)
    assert "pw-basic" not in response.get_data(as_text=True)


def test_actions_without_credentials_are_a_configuration_error(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="RQBEAT_WEB_TOKEN"):
        make_blueprint(redis_url, allow_actions=True)


@pytest.fixture
def static_client(redis_url: str) -> Iterator[FlaskClient]:
    yield web(redis_url)


def test_assets_are_served_from_the_package(static_client: FlaskClient) -> None:
    bodies = {}
    for name, kind in (("rqbeat.js", "javascript"), ("rqbeat.css", "css")):
        response = static_client.get(f"/rqbeat-static/{name}")
        assert response.status_code == 200 and kind in response.headers["Content-Type"]
        bodies[name] = response.get_data(as_text=True)
        response.close()
    js = bodies["rqbeat.js"]
    assert ".innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js
    assert "http://" not in js + bodies["rqbeat.css"] and "https://" not in js + bodies["rqbeat.css"]
