"""``rqbeat import``: schedules registered through each source's own API come out as a
TOML file that ``rqbeat apply`` takes and whose fires fall at the source's instants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import crontab  # rq-scheduler's own cron library
import pytest
from celery import Celery
from celery.schedules import crontab as celery_crontab
from celery.schedules import schedule as celery_every
from redbeat import RedBeatSchedulerEntry
from redis import Redis
from rq.cron import CronJob
from rq_scheduler import Scheduler

from scheduler.records import text

pytestmark = pytest.mark.integration

ZONE = "Europe/Berlin"
AFTER = datetime(2027, 3, 26, 15, 50, tzinfo=UTC)  # Friday; spans the DST change of 2027-03-28
FIRES = 6

APP = {
    "myapp/__init__.py": "",
    "myapp/tasks/__init__.py": "",
    "myapp/tasks/reports.py": (
        "def daily_summary(region='eu'):\n    return f'summary {region}'\n\n\n"
        "def cleanup(days=7):\n    return days\n"
    ),
}
RQ_CRON_CONFIG = """\
from rq import cron

from myapp.tasks.reports import cleanup, daily_summary

cron.register(daily_summary, 'reports', cron='30 2 * * 1-5', kwargs={'region': 'eu'}, job_timeout=600)
cron.register(cleanup, 'maintenance', interval=300, args=(14,), name='hourly cleanup')
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A user's app, outside the repository, with a cron config module."""
    root = tmp_path / "app"
    for name, body in APP.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    (root / "cron_config.py").write_text(RQ_CRON_CONFIG)
    return root


@pytest.fixture
def berlin() -> Iterator[None]:
    """This process and the rqbeat it starts run with the host zone Europe/Berlin."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = ZONE
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def source_keys(conn: Redis) -> dict[str | None, Any]:
    """Every key outside rqbeat's namespace, with its type and a digest of its value."""
    keys = (text(k) for k in conn.scan_iter())
    return {k: (conn.type(k), conn.dump(k)) for k in keys if k and not k.startswith("rqbeat:")}


def rqbeat(redis_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", "--redis-url", redis_url, *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def imported(redis_url: str, cwd: Path, *args: str) -> tuple[dict[str, Any], str]:
    out = cwd / "imported.toml"
    done = rqbeat(redis_url, "import", *args, "-o", str(out), cwd=cwd)
    assert done.returncode == 0, done.stderr
    applied = rqbeat(redis_url, "apply", str(out), cwd=cwd)
    assert applied.returncode == 0, applied.stderr
    return tomllib.loads(out.read_text())["schedules"], done.stderr


def rqbeat_fires(redis_url: str, cwd: Path, settings: dict[str, Any], schedule_id: str) -> list[datetime]:
    """The fires `rqbeat next` gives for an imported cron schedule."""
    done = rqbeat(
        redis_url, "next", settings["cron"], "--tz", settings.get("timezone", "UTC"), "-n", str(FIRES),
        "--after", AFTER.isoformat(), "--id", schedule_id, "--json", cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [datetime.fromisoformat(f["utc"].replace("Z", "+00:00")) for f in json.loads(done.stdout)]


def test_rq_cron_config(redis_url: str, app_dir: Path, berlin: None) -> None:
    schedules, notes = imported(redis_url, app_dir, "rq-cron", "cron_config.py")

    assert set(schedules) == {"daily_summary", "hourly-cleanup"}
    daily = schedules["daily_summary"]
    assert daily["target"] == "myapp.tasks.reports.daily_summary"
    assert (daily["queue"], daily["kwargs"], daily["timeout"]) == ("reports", {"region": "eu"}, "600s")
    cleanup = schedules["hourly-cleanup"]
    assert (cleanup["every"], cleanup["args"], cleanup["queue"]) == ("300s", [14], "maintenance")
    assert "anchored to the Unix epoch" in notes

    job = CronJob(queue_name="reports", func_name=daily["target"], cron="30 2 * * 1-5")
    expected, last = [], AFTER
    for _ in range(FIRES):  # RQ's own computation: UTC on RQ 2, the host's zone on RQ 3
        job.latest_enqueue_time = last
        last = job.get_next_enqueue_time().astimezone(UTC)
        expected.append(last)
    assert rqbeat_fires(redis_url, app_dir, daily, "daily_summary") == expected


def test_rq_cron_config_that_fails_to_import_is_one_line(redis_url: str, app_dir: Path) -> None:
    (app_dir / "broken.py").write_text("import myapp.nowhere\n")
    done = rqbeat(redis_url, "import", "rq-cron", "broken.py", cwd=app_dir)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "No module named 'myapp.nowhere'" in done.stderr


def test_rq_scheduler_jobs(redis_url: str, conn: Redis, app_dir: Path, berlin: None) -> None:
    source = Scheduler(connection=conn)
    with warnings.catch_warnings():  # rq-scheduler's crontab warns of its own future change
        warnings.simplefilter("ignore", FutureWarning)
        source.cron("*/20 9-17 * * 1-5", func="myapp.tasks.reports.daily_summary", queue_name="reports",
                    kwargs={"region": "us"}, id="business-hours-summary", timeout=120)  # fmt: skip
    source.schedule(datetime.now(UTC).replace(tzinfo=None), "myapp.tasks.reports.cleanup", interval=600,
                    queue_name="maintenance", repeat=3)  # fmt: skip
    source.enqueue_at(datetime(2030, 1, 1, tzinfo=UTC).replace(tzinfo=None), "myapp.tasks.reports.cleanup")
    before = source_keys(conn)

    schedules, notes = imported(redis_url, app_dir, "rq-scheduler")

    assert set(schedules) == {"business-hours-summary", "cleanup"}
    summary = schedules["business-hours-summary"]
    assert (summary["queue"], summary["kwargs"], summary["timeout"]) == ("reports", {"region": "us"}, "120s")
    assert (schedules["cleanup"]["every"], schedules["cleanup"]["queue"]) == ("600s", "maintenance")
    assert "repeat=3 is not carried over" in notes and "a one-off job" in notes
    assert source_keys(conn) == before  # rq-scheduler's keys: read, never written

    tab, expected, last = crontab.CronTab(summary["cron"]), [], AFTER
    for _ in range(FIRES):  # rq-scheduler's computation: the cron on the host's wall clock
        local = last.astimezone().replace(tzinfo=None)
        last = tab.next(now=local, return_datetime=True, default_utc=False).astimezone(UTC)
        expected.append(last)
    assert rqbeat_fires(redis_url, app_dir, summary, "business-hours-summary") == expected


def test_redbeat_entries(redis_url: str, conn: Redis, app_dir: Path) -> None:
    celery = Celery("myapp", broker=redis_url)
    celery.conf.update(redbeat_redis_url=redis_url, timezone=ZONE, enable_utc=True)
    weekday = celery_crontab(minute="30", hour="2", day_of_week="mon-fri", app=celery)
    options = {"queue": "reports"}
    RedBeatSchedulerEntry("nightly report", "myapp.tasks.reports.daily_summary", weekday,
                          kwargs={"region": "eu"}, options=options, app=celery).save()  # fmt: skip
    RedBeatSchedulerEntry("cleanup", "myapp.tasks.reports.cleanup", celery_every(timedelta(minutes=10)),
                          args=[3], app=celery).save()  # fmt: skip
    both_days = celery_crontab(minute="0", hour="0", day_of_month="1", day_of_week="mon", app=celery)
    RedBeatSchedulerEntry("odd", "myapp.tasks.reports.cleanup", both_days, app=celery).save()

    schedules, notes = imported(redis_url, app_dir, "redbeat", "--tz", ZONE)

    assert set(schedules) == {"nightly-report", "cleanup", "odd"}
    nightly = schedules["nightly-report"]
    assert (nightly["target"], nightly["queue"], nightly["timezone"]) == (
        "myapp.tasks.reports.daily_summary", "reports", ZONE,
    )  # fmt: skip
    assert (schedules["cleanup"]["every"], schedules["cleanup"]["args"]) == ("600s", [3])
    assert "odd: Celery runs a crontab when day_of_month AND day_of_week match" in notes

    expected, last = [], AFTER
    for _ in range(FIRES):  # Celery's own computation, in the app's zone
        start, delta, _now = weekday.remaining_delta(last)
        last = (start + delta).astimezone(UTC)
        expected.append(last)
    assert rqbeat_fires(redis_url, app_dir, nightly, "nightly-report") == expected
