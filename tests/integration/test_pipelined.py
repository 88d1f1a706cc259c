"""scripts.pipelined against a real redis-server: the order of preparing, sending and
settling batches, with one call in flight (dispatch) and two (apply's upserts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from scheduler import scripts

pytestmark = pytest.mark.integration

COUNT = "return redis.call('INCR', KEYS[1])"
KEY = "test:pipelined:count"


def run(conn: Redis, ahead: int, stop_at: int | None = None) -> tuple[list[str], int]:
    """Five batches; returns the events (prepared N / settled N=reply) and how many
    calls Redis ran."""
    script = conn.register_script(COUNT)
    events: list[str] = []

    def batches() -> Iterator[tuple[int, list[Any] | None]]:
        for i in range(5):
            events.append(f"prepared {i}")
            yield i, []

    def settle(i: int, reply: Any) -> bool:
        events.append(f"settled {i}={reply}")
        return i != stop_at

    scripts.pipelined(conn, script, [KEY], batches(), settle, ahead=ahead)
    return events, int(conn.get(KEY) or 0)


def test_one_ahead_settles_each_batch_before_sending_the_next(conn: Redis) -> None:
    events, ran = run(conn, ahead=1)
    assert events[:4] == ["prepared 0", "prepared 1", "settled 0=1", "prepared 2"]
    assert [e for e in events if e.startswith("settled")] == [f"settled {i}={i + 1}" for i in range(5)]
    assert ran == 5


def test_two_ahead_sends_the_next_batch_before_settling_the_last(conn: Redis) -> None:
    events, ran = run(conn, ahead=2)
    assert events[:4] == ["prepared 0", "prepared 1", "prepared 2", "settled 0=1"]
    assert [e for e in events if e.startswith("settled")] == [f"settled {i}={i + 1}" for i in range(5)]
    assert ran == 5


@pytest.mark.parametrize("ahead", [1, 2])
def test_a_refusal_stops_sending(conn: Redis, ahead: int) -> None:
    """Settling False stops: nothing more is sent. With two ahead, the one sent before
    the refusal may still run (its connection is dropped, but Redis may have read it):
    why dispatch keeps one ahead."""
    events, count = run(conn, ahead=ahead, stop_at=0)
    assert [e for e in events if e.startswith("settled")] == ["settled 0=1"]
    assert sum(e.startswith("prepared") for e in events) == ahead + 1  # the last prepared ...
    assert 1 <= count <= ahead  # ... was never sent
