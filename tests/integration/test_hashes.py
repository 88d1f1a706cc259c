"""The one bulk reader of schedule hashes, against a real redis-server."""

from __future__ import annotations

import pytest
from redis import Redis

from scheduler import hashes
from scheduler.keys import Keys
from scheduler.protocol import ScheduleState

pytestmark = pytest.mark.integration

K = Keys("bulk")


def test_reads_every_hash_in_order_across_chunks(conn: Redis) -> None:
    ids = [f"s{i:05d}" for i in range(hashes.CHUNK * 2 + 3)]
    pipe = conn.pipeline(transaction=False)
    for i, schedule_id in enumerate(ids):
        pipe.hset(K.schedule(schedule_id), mapping={"state": "due", "n": str(i)})
    pipe.zadd(K.due, {ids[0]: 1.5, ids[-1]: 2.25})
    pipe.execute()
    read = list(hashes.read_hashes(conn, K, ids))
    assert [h.schedule_id for h in read] == ids
    assert [h.fields["n"] for h in read] == [str(i) for i in range(len(ids))]
    assert {h.schedule_id: h.due_ms for h in read if h.due_ms is not None} == {ids[0]: 1500, ids[-1]: 2250}


def test_a_missing_or_wrong_typed_key_is_reported_not_raised(conn: Redis) -> None:
    conn.hset(K.schedule("ok"), "state", "paused")
    conn.set(K.schedule("by-hand"), "x")
    ids = ["ok", "gone", "by-hand"]
    kinds = [(h.schedule_id, h.key_type) for h in hashes.read_hashes(conn, K, ids)]
    assert kinds == [("ok", hashes.HASH), ("by-hand", "string")]
    kinds = [(h.schedule_id, h.key_type) for h in hashes.read_hashes(conn, K, ids, missing=True)]
    assert kinds == [("ok", hashes.HASH), ("gone", hashes.MISSING), ("by-hand", "string")]
    records = list(hashes.read_records(conn, K, ids))
    assert [(r.id, r.state) for r in records] == [
        ("ok", ScheduleState.BROKEN),
        ("by-hand", ScheduleState.BROKEN),
    ]
    assert records[1].error == "key has type string, not hash"


def test_a_wrong_typed_due_key_leaves_the_hashes_readable(conn: Redis) -> None:
    conn.set(K.due, "x")
    conn.hset(K.schedule("ok"), "state", "due")
    assert [(h.schedule_id, h.due_ms) for h in hashes.read_hashes(conn, K, ["ok"])] == [("ok", None)]
