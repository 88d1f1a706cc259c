"""Paging through the dashboard's list (scheduler.web.listing) while schedules move.

The bug these pin (issue #16): with offsets as cursors, a schedule entering the due
zset ahead of the cursor between two page reads (a trigger, an ack re-arming an
every-second schedule) shifted the next page back by one, so it repeated the last row
of the page before; one leaving it (dispatched, paused) skipped a row. Keyset cursors
(the last row's score and id) are where the page stopped whatever moved meanwhile.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from devtools.cluster import Cluster
from scheduler import Client, Schedule
from scheduler.keys import Keys
from scheduler.web import listing
from scheduler.web.listing import Query, read_page

pytestmark = pytest.mark.integration

KEYS = Keys()
QUEUES = ("default", "reports", "billing")
OWNERS = ("api", "apply:ops")


def nightly(i: int) -> Schedule:
    """Realistic schedules; few distinct fire times, so many share a due score (ties
    are ordered by id, and a page often ends inside a tie)."""
    return Schedule(
        id=f"report-{i:04d}",
        target="myapp.tasks.reports.daily_summary",
        kwargs={"region": f"r{i % 7}"},
        cron=f"{i % 3 * 15} 3 1 1 *",
        timezone="Europe/Berlin" if i % 2 else "UTC",
        queue=QUEUES[i % len(QUEUES)],
        owner=OWNERS[i % 5 == 0],
        max_attempts=3,
    )


def pages(conn: Redis, **filters: str | int) -> Iterator[list[str]]:
    """Every page of the list under ``filters``, following the cursors."""
    cursor: str | None = ""
    while cursor is not None:
        args = {**{k: str(v) for k, v in filters.items()}, "cursor": cursor}
        page = read_page(conn, KEYS, Query.parse(args))
        yield [r.id for r in page.records]
        cursor = page.next_cursor


def test_a_row_entering_ahead_of_the_cursor_does_not_repeat_the_last_row(client: Client, conn: Redis) -> None:
    client.upsert_many([nightly(i) for i in range(300)])
    walk = pages(conn, state="due", queue="reports", size=20)
    first = next(walk)
    assert len(first) == 20
    # between the two page reads a schedule further down the list is triggered: it
    # now sorts first (due now); an offset cursor then re-showed first[-1]
    client.trigger("report-0298")
    second = next(walk)
    assert not set(first) & set(second), f"the next page repeats {set(first) & set(second)}"
    rest = [i for page in walk for i in page]
    expected = {f"report-{i:04d}" for i in range(1, 300, 3)}
    assert set(first + second + rest) == expected - {"report-0298"}  # it moved behind the cursor
    assert len(first + second + rest) == len(expected) - 1


def test_a_row_leaving_ahead_of_the_cursor_does_not_skip_one(client: Client, conn: Redis) -> None:
    client.upsert_many([nightly(i) for i in range(300)])
    walk = pages(conn, state="due", queue="reports", size=20)
    first = next(walk)
    for schedule_id in first[:3]:  # paused from the first page (an offset cursor skipped 3)
        client.pause(schedule_id)
    seen = first + [i for page in walk for i in page]
    assert sorted(seen) == [f"report-{i:04d}" for i in range(1, 300, 3)]


def test_pages_follow_the_zset_order_through_ties(client: Client, conn: Redis) -> None:
    client.upsert_many([nightly(i) for i in range(90)])
    # ids that a locale's collation orders otherwise than Redis's bytewise order, in one tie
    odd = ["Report-9", "report_9", "report-9", "report-", "report9", "r-0", "R_0", "r0", "report-0000-b"]
    client.upsert_many([dataclasses.replace(nightly(0), id=i) for i in odd])
    seen = [i for page in pages(conn, state="due", size=7) for i in page]
    reply: list[bytes] = conn.zrange(KEYS.due, 0, -1)  # type: ignore[assignment]
    ranked = [m.decode() for m in reply]
    assert seen == ranked


def test_walking_every_page_shows_each_matching_schedule_exactly_once(client: Client, conn: Redis) -> None:
    schedules = [nightly(i) for i in range(240)]
    client.upsert_many(schedules)
    for i in range(0, 240, 4):
        client.pause(f"report-{i:04d}")
    stored = {r.id: r for r in client.list()}

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(
        state=st.sampled_from(["", "due", "paused", "running", "broken"]),
        queue=st.sampled_from(["", *QUEUES]),
        owner=st.sampled_from(["", *OWNERS]),
        prefix=st.sampled_from(["", "report-0", "report-01", "report-023", "nothing"]),
        size=st.integers(min_value=1, max_value=60),
        scan_budget=st.sampled_from([3, 17, 5_000]),
        search_count=st.sampled_from([5, 64, 10_000]),
    )
    def walk_all(
        *, state: str, queue: str, owner: str, prefix: str, size: int, scan_budget: int, search_count: int
    ) -> None:
        with pytest.MonkeyPatch.context() as patch:  # small budgets: short pages, split SSCAN slices
            patch.setattr(listing, "SCAN_BUDGET", scan_budget)
            patch.setattr(listing, "_SEARCH_COUNT", search_count)
            found = [
                i
                for page in pages(conn, state=state, queue=queue, owner=owner, prefix=prefix, size=size)
                for i in page
            ]
        expected = sorted(
            r.id
            for r in stored.values()
            if r.id.startswith(prefix)
            and (not state or r.state == state)
            and (not queue or (r.schedule is not None and r.schedule.queue == queue))
            and (not owner or (r.schedule is not None and r.schedule.owner == owner))
        )
        assert len(found) == len(set(found)), "a schedule was shown twice"
        assert sorted(found) == expected

    walk_all()


def test_paging_while_a_replica_and_a_worker_move_a_schedule_every_second(
    client: Client, conn: Redis, cluster: Cluster
) -> None:
    """The scene the bug was seen in: an every-second schedule is dispatched and acked
    ahead of the filtered rows while one pages through them."""
    # Feb 29: never due during the test, whatever the date
    client.upsert_many([dataclasses.replace(nightly(i), cron=f"{i % 3 * 15} 3 29 2 *") for i in range(600)])
    client.upsert(Schedule(id="heartbeat", target="tests.jobs.record", every_ms=1000, queue="default"))
    cluster.replica("r1")
    cluster.worker("w1", "default")
    expected = sorted(f"report-{i:04d}" for i in range(1, 600, 3))

    def acked() -> int:
        return sum(e.event == "succeeded" for e in client.history("heartbeat", 1000))

    deadline = time.monotonic() + 60
    walks = 0
    start = acked()
    while walks < 3 or acked() < start + 3:  # paged while it moved, several times
        assert time.monotonic() < deadline, f"heartbeat acked {acked() - start} times in 60 s"
        found = [i for page in pages(conn, state="due", queue="reports", size=20) for i in page]
        assert sorted(found) == expected and len(found) == len(set(found)), f"walk {walks}"
        walks += 1
