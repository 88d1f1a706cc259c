"""Dispatch reads several batches at once and writes each while deciding the next.

Every batch is its own fenced script call, so a lease lost or an edit racing between
two batches stops the rest without touching what was already written.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from scheduler import scripts
from scheduler.clock import iso, redis_now_ms
from scheduler.engine import dispatch, rqjob
from scheduler.engine.dispatch import FIRST_CHECK_MS, READ_AHEAD, BatchResult, Dispatcher
from scheduler.errors import LeadershipLost
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
TOKEN = "1:test"
BATCH = 3
COUNT = 10  # four batches of at most three: one read covers them all


def _seed(conn: Redis) -> int:
    raw = [{"id": f"s-{i}", "target": "tests.jobs.record", "every": "1h"} for i in range(COUNT)]
    Client(conn).upsert_many([Schedule.from_dict(r) for r in raw])
    conn.set(K.leader, TOKEN)
    return redis_now_ms(conn) + 3_600_000


def _queued(conn: Redis) -> list[bytes]:
    return conn.lrange("rq:queue:default", 0, -1)  # type: ignore[return-value]


class _Meddling(Dispatcher):
    """Runs ``meddle`` once, when the first batch has been written and the next one
    decided but not sent yet."""

    def __init__(self, conn: Redis, meddle: Any) -> None:
        super().__init__(conn, K, batch_size=BATCH)
        self._meddle = meddle

    def _settle(self, part: BatchResult, reply: Any, done: BatchResult, now_ms: int, epoch: int) -> bool:
        if self._meddle is not None:
            self._meddle()
            self._meddle = None
        return super()._settle(part, reply, done, now_ms, epoch)


def test_one_call_dispatches_every_batch_it_read(conn: Redis) -> None:
    assert BATCH * READ_AHEAD >= COUNT
    now_ms = _seed(conn)
    result = Dispatcher(conn, K, batch_size=BATCH).dispatch(now_ms, TOKEN, 1)
    assert sorted(d.schedule_id for d in result.runs) == sorted(f"s-{i}" for i in range(COUNT))
    assert sorted(_queued(conn)) == sorted(d.job_id.encode() for d in result.runs)
    assert conn.zcard(K.due) == 0
    assert conn.zcard(K.running) == COUNT


def test_an_edit_between_batches_stops_the_rest_until_they_are_read_again(conn: Redis) -> None:
    now_ms = _seed(conn)
    dispatcher = _Meddling(conn, lambda: conn.incr(K.revision))
    first = dispatcher.dispatch(now_ms, TOKEN, 1)
    assert len(first.runs) == BATCH  # the raced batch and the ones after it: not written
    assert len(_queued(conn)) == BATCH
    assert conn.zcard(K.due) == COUNT - BATCH
    rest = dispatcher.dispatch(now_ms, TOKEN, 1)
    assert len(rest.runs) == COUNT - BATCH
    ids = [d.schedule_id for d in first.runs + rest.runs]
    assert sorted(ids) == sorted(f"s-{i}" for i in range(COUNT))
    assert len(set(_queued(conn))) == COUNT


def test_a_lease_lost_between_batches_keeps_what_was_fenced_and_writes_nothing_more(conn: Redis) -> None:
    now_ms = _seed(conn)
    dispatcher = _Meddling(conn, lambda: conn.set(K.leader, "2:other"))
    with pytest.raises(LeadershipLost):
        dispatcher.dispatch(now_ms, TOKEN, 1)
    assert len(_queued(conn)) == BATCH
    assert conn.zcard(K.running) == BATCH
    assert conn.zcard(K.due) == COUNT - BATCH


def test_a_flushed_script_cache_is_reloaded_and_nothing_is_written_twice(conn: Redis) -> None:
    now_ms = _seed(conn)
    dispatcher = Dispatcher(conn, K, batch_size=BATCH)
    conn.script_flush()
    result = dispatcher.dispatch(now_ms, TOKEN, 1)
    assert len(result.runs) == COUNT
    assert len(_queued(conn)) == COUNT


# -- decided ahead of the due time, written at it ----------------------------------------


def _history_events(conn: Redis, schedule_id: str) -> list[dict[bytes, bytes]]:
    entries: Any = conn.xrange(K.history(schedule_id))
    return [fields for _, fields in entries]


def test_a_prepared_dispatch_writes_at_send_time_what_was_decided_before(conn: Redis) -> None:
    due_ms = _seed(conn)
    dispatcher = Dispatcher(conn, K, batch_size=BATCH)
    prepared = dispatcher.prepare(due_ms, TOKEN, 1)
    assert prepared is not None
    assert sum(len(part.runs) for part, _ in prepared.batches) == COUNT
    assert _queued(conn) == []  # deciding wrote nothing
    sent_ms = due_ms + 3
    result = dispatcher.send(prepared, sent_ms)
    assert len(result.runs) == COUNT
    assert len(set(_queued(conn))) == COUNT
    dispatched = [e for e in _history_events(conn, "s-0") if e[b"event"] == b"dispatched"]
    assert [e[b"at"] for e in dispatched] == [iso(sent_ms).encode()]
    job = conn.hgetall(f"rq:job:{result.runs[0].job_id}")
    assert job[b"enqueued_at"] == rqjob.rq_timestamp(sent_ms).encode()
    # the watchdog's first look counts from the write too, not from the decision
    assert conn.zscore(K.running, "s-0") == (sent_ms + FIRST_CHECK_MS) / 1000


def test_nothing_due_means_nothing_to_prepare(conn: Redis) -> None:
    due_ms = _seed(conn)
    assert Dispatcher(conn, K).prepare(due_ms - 3_600_000, TOKEN, 1) is None


def test_an_edit_after_preparing_makes_the_prepared_write_refuse(conn: Redis) -> None:
    due_ms = _seed(conn)
    dispatcher = Dispatcher(conn, K, batch_size=BATCH)
    prepared = dispatcher.prepare(due_ms, TOKEN, 1)
    assert prepared is not None
    Client(conn).pause("s-4")  # an edit: s-4 must not run, though it was decided to
    assert dispatcher.send(prepared, due_ms).size == 0
    assert _queued(conn) == []
    result = dispatcher.dispatch(due_ms, TOKEN, 1)  # decided again: without s-4
    assert sorted(d.schedule_id for d in result.runs) == sorted(f"s-{i}" for i in range(COUNT) if i != 4)


def test_a_lease_lost_after_preparing_writes_nothing(conn: Redis) -> None:
    due_ms = _seed(conn)
    dispatcher = Dispatcher(conn, K, batch_size=BATCH)
    prepared = dispatcher.prepare(due_ms, TOKEN, 1)
    assert prepared is not None
    conn.set(K.leader, "2:other")
    with pytest.raises(LeadershipLost):
        dispatcher.send(prepared, due_ms)
    assert _queued(conn) == []
    assert conn.zcard(K.due) == COUNT


@pytest.fixture
def sent_packed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per script call: whether it went out as bytes packed ahead (scripts.Packed)."""
    calls: list[bool] = []
    init = scripts.Pending.__init__

    def spy(self: scripts.Pending, conn: Redis, script: Any, keys: Any, args: Any) -> None:
        calls.append(isinstance(args, scripts.Packed))
        init(self, conn, script, keys, args)

    monkeypatch.setattr(scripts.Pending, "__init__", spy)
    return calls


def test_an_armed_send_at_its_due_time_writes_the_bytes_packed_ahead(
    conn: Redis, sent_packed: list[bool]
) -> None:
    due_ms = _seed(conn)
    dispatcher = Dispatcher(conn, K, batch_size=BATCH)
    prepared = dispatcher.prepare(due_ms, TOKEN, 1)
    assert prepared is not None
    armed = dispatcher.arm(prepared)
    assert armed.packed is not None
    assert _queued(conn) == []  # packing wrote nothing
    sent_packed.clear()  # the seeding's calls
    result = dispatcher.send(armed, due_ms)
    assert len(result.runs) == COUNT
    assert len(set(_queued(conn))) == COUNT
    assert sent_packed == [True, False, False, False]  # the first batch packed, the rest as usual
    dispatched = [e for e in _history_events(conn, "s-0") if e[b"event"] == b"dispatched"]
    assert [e[b"at"] for e in dispatched] == [iso(due_ms).encode()]


def test_an_armed_send_that_is_late_is_stamped_when_sent_not_with_the_packed_time(
    conn: Redis, sent_packed: list[bool]
) -> None:
    due_ms = _seed(conn)
    dispatcher = Dispatcher(conn, K, batch_size=BATCH)
    prepared = dispatcher.prepare(due_ms, TOKEN, 1)
    assert prepared is not None
    sent_ms = due_ms + 2
    armed = dispatcher.arm(prepared)
    sent_packed.clear()  # the seeding's calls
    result = dispatcher.send(armed, sent_ms)
    assert len(result.runs) == COUNT
    assert sent_packed == [False] * 4
    job = conn.hgetall(f"rq:job:{result.runs[0].job_id}")
    assert job[b"enqueued_at"] == rqjob.rq_timestamp(sent_ms).encode()


def test_an_armed_send_stays_fenced_by_the_revision_and_the_lease(conn: Redis) -> None:
    due_ms = _seed(conn)
    dispatcher = Dispatcher(conn, K, batch_size=BATCH)
    prepared = dispatcher.prepare(due_ms, TOKEN, 1)
    assert prepared is not None
    armed = dispatcher.arm(prepared)
    Client(conn).pause("s-4")
    assert dispatcher.send(armed, due_ms).size == 0
    conn.set(K.leader, "2:other")
    with pytest.raises(LeadershipLost):
        dispatcher.send(dispatcher.arm(prepared), due_ms)
    assert _queued(conn) == []


def test_a_large_first_write_is_not_packed_ahead(conn: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "ARM_MAX_WRITES", BATCH - 1)
    due_ms = _seed(conn)
    dispatcher = Dispatcher(conn, K, batch_size=BATCH)
    prepared = dispatcher.prepare(due_ms, TOKEN, 1)
    assert prepared is not None
    assert dispatcher.arm(prepared).packed is None
    assert len(dispatcher.send(prepared, due_ms).runs) == COUNT
