"""The dashboard mounted into rq-dashboard 0.9.0's own Flask app, as the README's
recipe does: RQ's pages keep working, the schedules appear beside them, and a run in
flight links to its job's page in rq-dashboard."""

from __future__ import annotations

import re

import pytest
from redis import Redis
from rq_dashboard.cli import make_flask_app
from rq_dashboard.web import setup_rq_connection

from scheduler import Client, Schedule
from scheduler.web import make_blueprint

pytestmark = pytest.mark.integration


def test_schedules_section_inside_rq_dashboard(redis_url: str, conn: Redis) -> None:
    client = Client(conn)
    client.upsert(Schedule(id="nightly", target="tests.jobs.record", cron="30 2 * * *"))
    client.trigger("nightly")
    # what the leader writes when it dispatches: the run's job id, here without a job
    conn.hset("rqbeat:schedule:nightly", mapping={"state": "running", "job_id": "nightly-1-1"})
    conn.zadd("rqbeat:running", {"nightly": 1})
    conn.zrem("rqbeat:due", "nightly")

    app = make_flask_app(None, None, None, "/rq")
    app.config["RQ_DASHBOARD_REDIS_URL"] = redis_url
    setup_rq_connection(app)
    app.register_blueprint(make_blueprint(redis_url), url_prefix="/rq/schedules")
    app.testing = True
    web = app.test_client()

    assert web.get("/rq/").status_code == 200  # rq-dashboard's own page
    response = web.get("/rq/schedules/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert re.search(r'<tr data-id="nightly">', html)
    assert 'href="/rq/schedules/rqbeat-static/rqbeat.css"' in html
    assert 'href="/rq/"' in html  # back to RQ's pages
    page = web.get("/rq/schedules/schedule/nightly").get_data(as_text=True)
    assert 'href="/rq/0/view/job/nightly-1-1"' in page
    asset = web.get("/rq/schedules/rqbeat-static/rqbeat.js")
    assert asset.status_code == 200
    asset.close()
