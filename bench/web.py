"""Scenario 8, dashboard: server time of the schedule list's pages at 100k schedules.

N schedules (100k; 10k with --quick) are registered with ``Client.upsert_many`` (the
public API, as ``rqbeat apply`` does) on a private Redis: all due (a cron far from
now), 1% paused, every 10th on another queue. The dashboard's Flask app
(``scheduler.web.create_app``) then serves requests in-process through Flask's test
client, so the time measured is the server's: reading Redis (over loopback), decoding,
rendering the template. Each page is requested 20 times after one warm-up request;
the median is reported. Pages: the first page of the list (50 rows), the JSON the
page refreshes itself with, a filtered page (state=paused: the idle ids by ZDIFF),
a queue filter, an id-prefix search (SSCAN MATCH), and one schedule's page (next 10 fires
and history).
"""

from __future__ import annotations

import statistics
import time

from flask.testing import FlaskClient

from bench.core import Context, Result, Target
from scheduler import Client, Schedule
from scheduler.redisconf import RedisSettings
from scheduler.web import WebConfig, create_app

NAME = "web"
TITLE = "8. Dashboard"
REQUESTS = 20
PAGES = [
    ("first page of the list", "/"),
    ("the list's JSON refresh", "/api/schedules"),
    ("state=paused (idle ids, one ZDIFF)", "/?state=paused"),
    ("queue=other", "/?queue=other"),
    ("id prefix search", "/?prefix=s-00042"),
    ("one schedule's page", "/schedule/s-000042"),
]


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


def run(ctx: Context) -> Result:
    n = 10_000 if ctx.quick else 100_000
    label = f"{n // 1000}k"
    res = Result(NAME, TITLE, __doc__ or "")
    for rep in range(ctx.reps):
        with ctx.redis(f"web-{rep}") as server:
            ctx.log(f"seeding {n} schedules, rep {rep + 1}/{ctx.reps}")
            seed(server.url, n)
            app = create_app(WebConfig(redis=RedisSettings(url=server.url)))
            web = app.test_client()
            for name, path in PAGES:
                timed(web, path)  # warm-up: connection pool, template compilation
                median = statistics.median(timed(web, path) for _ in range(REQUESTS))
                target = Target("<=", 300, "≤ 300 ms") if path == "/" else None
                res.metric(f"N={label}: {name}", "ms", target=target, digits=1).values.append(median)
                ctx.log(f"  {name}: {median:.1f} ms")
    res.notes.append(f"Median of {REQUESTS} requests per page per repetition, in-process (no HTTP socket).")
    return res
