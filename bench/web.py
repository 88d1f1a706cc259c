"""Scenario 8, dashboard: server time of the schedule list's pages at 100k schedules.

N = 100k schedules (--quick too: the target is at 100k; it requests each page fewer
times) are registered with ``Client.upsert_many`` (the
public API, as ``rqbeat apply`` does) on a private Redis: all due (a cron far from
now), 1% paused, every 10th on another queue. The dashboard's Flask app
(``scheduler.web.create_app``) then serves requests in-process through Flask's test
client, so the time measured is the server's: reading Redis (over loopback), decoding,
rendering the template. Each page is requested 20 times after one warm-up request;
the median is reported (5 times with --quick). Pages: the first page of the list (50
rows), the JSON the page refreshes itself with, the first page of a state filter
(state=due, one keyset read of the due zset; state=paused: the idle ids by ZDIFF), of a
queue filter (a budgeted scan: every 10th schedule matches), of both, the next page of
both (from the first page's cursor), of an id-prefix search (SSCAN MATCH), and one
schedule's page (next 10 fires and history). Each list page has the target: ≤ 300 ms.
"""

from __future__ import annotations

import statistics
import time
from urllib.parse import urlencode

from flask.testing import FlaskClient

from bench.core import Context, Result, Target
from scheduler import Client, Schedule
from scheduler.redisconf import RedisSettings
from scheduler.web import WebConfig, create_app

NAME = "web"
TITLE = "8. Dashboard"
N = 100_000
REQUESTS = 20
QUICK_REQUESTS = 5
FILTERED = "state=due&queue=other"
NEXT = "next page of state=due&queue=other"
#: (name, path, whether the ≤ 300 ms target applies); NEXT's path is found at run time.
PAGES = [
    ("first page of the list", "/", True),
    ("the list's JSON refresh", "/api/schedules", False),
    ("state=due", "/?state=due", True),
    ("state=paused (idle ids, one ZDIFF)", "/?state=paused", True),
    ("queue=other", "/?queue=other", True),
    (FILTERED, f"/?{FILTERED}", True),
    (NEXT, "", True),
    ("id prefix search", "/?prefix=s-00042", True),
    ("one schedule's page", "/schedule/s-000042", False),
]
TARGET = Target("<=", 300, "≤ 300")


def seed(conn_url: str, n: int) -> None:
    settings = RedisSettings(url=conn_url)
    conn = settings.connect()
    client = Client(conn)
    batch = 10_000
    for start in range(0, n, batch):
        client.upsert_many(
            [
                Schedule(
                    id=f"s-{i:06d}",
                    target="bench.jobs.noop",
                    cron=f"{i % 60} {i % 24} 1 1 *",
                    queue="other" if i % 10 == 0 else "default",
                )
                for i in range(start, min(n, start + batch))
            ]
        )
    for i in range(0, n, 100):
        client.pause(f"s-{i:06d}")
    conn.close()


def timed(web: FlaskClient, path: str) -> float:
    started = time.perf_counter()
    response = web.get(path)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}")
    response.close()
    return elapsed * 1000


def next_page(web: FlaskClient) -> str:
    """The path of the filtered list's second page (the cursor its first page gives)."""
    cursor = web.get(f"/api/schedules?{FILTERED}").get_json()["next_cursor"]
    if not cursor:
        raise RuntimeError(f"the first page of {FILTERED} has no next page")
    return f"/?{FILTERED}&{urlencode({'cursor': cursor})}"


def run(ctx: Context) -> Result:
    n = N
    requests = QUICK_REQUESTS if ctx.quick else REQUESTS
    label = f"{n // 1000}k"
    res = Result(NAME, TITLE, __doc__ or "")
    for rep in range(ctx.reps):
        with ctx.redis(f"web-{rep}") as server:
            ctx.log(f"seeding {n} schedules, rep {rep + 1}/{ctx.reps}")
            seed(server.url, n)
            app = create_app(WebConfig(redis=RedisSettings(url=server.url)))
            web = app.test_client()
            for name, fixed, targeted in PAGES:
                path = fixed or next_page(web)
                timed(web, path)  # warm-up: connection pool, template compilation
                median = statistics.median(timed(web, path) for _ in range(requests))
                target = TARGET if targeted else None
                res.metric(f"N={label}: {name}", "ms", target=target, digits=1).values.append(median)
                ctx.log(f"  {name}: {median:.1f} ms")
    res.notes.append(f"Median of {requests} requests per page per repetition, in-process (no HTTP socket).")
    return res
