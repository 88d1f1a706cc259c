"""Manage schedules from Python with :class:`scheduler.Client`.

Upsert, list, pause, resume, trigger, read the history and remove, against the
Redis in RQBEAT_REDIS_URL. No scheduler needs to run: the client only edits
schedules (a running leader picks every edit up at once)::

    RQBEAT_REDIS_URL=redis://localhost:6379/0 python examples/manage_schedules.py

Leaves ``example-report`` behind (triggered, so due now) and removes
``example-heartbeat``.
"""

from __future__ import annotations

import os
import sys

from redis import Redis

from scheduler import Client, InvalidSchedule, Schedule


def main() -> int:
    conn = Redis.from_url(os.environ.get("RQBEAT_REDIS_URL", "redis://localhost:6379/0"))
    client = Client(conn, os.environ.get("RQBEAT_NAMESPACE", "rqbeat"))

    report = Schedule(
        id="example-report",
        target="workers.demo.hello",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        kwargs={"name": "report"},
        max_attempts=3,
    )
    heartbeat = Schedule(id="example-heartbeat", target="workers.demo.hello", every_ms=30_000)
    for schedule in (report, heartbeat):
        result = client.upsert(schedule)
        print(f"upsert {result.id}: {result.action} (version {result.version})")

    # Invalid definitions never reach Redis: the error names the field and the value.
    try:
        Schedule(id="bad id", target="workers.demo.hello", cron="* * * * *")
    except InvalidSchedule as exc:
        print(f"refused: field={exc.field} value={exc.value!r}")

    for record in client.list():
        trigger = record.schedule.trigger_text if record.schedule else "?"
        print(f"list {record.id}: {trigger} state={record.state} fire_ms={record.fire_ms}")

    print(f"pause example-report: changed={client.pause('example-report')}")
    print(f"pause example-report again: changed={client.pause('example-report')}")
    print(f"resume example-report: changed={client.resume('example-report')}")
    client.trigger("example-report")  # due now; its regular fires carry on afterwards
    print("trigger example-report: due now")

    events = [entry.event for entry in client.history("example-report", count=10)]
    print(f"history example-report: {' '.join(events)}")
    print(f"remove example-heartbeat: removed={client.remove('example-heartbeat')}")
    print(f"remaining: {' '.join(client.ids())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
