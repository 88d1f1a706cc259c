"""Compare-and-set writes of the store: ``upsert(..., version=)`` and ``edit``."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from scheduler.errors import InvalidSchedule, ScheduleExists, ScheduleNotFound, StaleVersion
from scheduler.model import Schedule
from scheduler.records import ScheduleRecord
from scheduler.store import EDIT_ATTEMPTS, Client
from tests.keyspace import snapshot

pytestmark = pytest.mark.integration


def beat(**changes: Any) -> Schedule:
    return Schedule.from_dict(
        {"id": "beat", "target": "app.jobs.ping", "every": "1h", "args": ["eu"], **changes}
    )


def test_create_only_refuses_an_existing_id(conn: Redis) -> None:
    client = Client(conn)
    assert client.upsert(beat(), version=0).action == "created"
    before = snapshot(conn)
    with pytest.raises(ScheduleExists) as refused:
        client.upsert(beat(every="20s"), version=0)
    assert (refused.value.schedule_id, refused.value.found) == ("beat", 1)
    with pytest.raises(ScheduleExists):  # the same definition is refused too: it exists
        client.upsert(beat(), version=0)
    assert snapshot(conn) == before


def test_a_stale_version_writes_nothing(conn: Redis) -> None:
    client = Client(conn)
    client.upsert(beat())
    client.upsert(beat(every="2h"))
    before = snapshot(conn)
    with pytest.raises(StaleVersion) as stale:
        client.upsert(beat(every="3h"), version=1)
    assert (stale.value.expected, stale.value.found) == (1, 2)
    assert snapshot(conn) == before
    assert client.upsert(beat(every="3h"), version=2).version == 3


def test_edit_keeps_the_other_settings(conn: Redis) -> None:
    client = Client(conn)
    client.upsert(beat(queue="q1"))
    result = client.edit("beat", {"every": "20s"})
    assert (result.action, result.version) == ("updated", 2)
    stored = client.get("beat").schedule
    assert stored is not None
    assert (stored.every_ms, stored.args, stored.queue) == (20_000, ("eu",), "q1")
    assert client.edit("beat", {"every": "20s"}).action == "unchanged"
    before = snapshot(conn)
    with pytest.raises(InvalidSchedule):
        client.edit("beat", {"every": "0s"})
    with pytest.raises(ScheduleNotFound):
        client.edit("nope", {"every": "1m"})
    assert snapshot(conn) == before


def test_edit_rereads_when_another_edit_lands_between_read_and_write(
    conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timeline: edit A reads version 1; edit B writes version 2 (a description); A's
    compare-and-set on version 1 fails, writes nothing; A reads version 2 again and
    writes version 3 with both changes. Without the compare-and-set, A would have
    written its stale copy over B's description."""
    client, other = Client(conn), Client(conn)
    client.upsert(beat())
    reads: list[int] = []
    real_get = Client.get

    def get_then_race(self: Client, schedule_id: str) -> ScheduleRecord:
        record = real_get(self, schedule_id)
        reads.append(record.version)
        if len(reads) == 1:
            other.upsert(beat(description="from B"))  # B: version 2
        return record

    monkeypatch.setattr(Client, "get", get_then_race)
    result = client.edit("beat", {"every": "20s"})
    assert reads == [1, 2]
    assert result.version == 3
    stored = real_get(client, "beat").schedule
    assert stored is not None
    assert (stored.every_ms, stored.description, stored.args) == (20_000, "from B", ("eu",))


def test_edit_gives_up_when_the_schedule_keeps_changing(conn: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    client, other = Client(conn), Client(conn)
    client.upsert(beat())
    real_get = Client.get
    reads: list[int] = []

    def get_then_race(self: Client, schedule_id: str) -> ScheduleRecord:
        record = real_get(self, schedule_id)
        reads.append(record.version)
        other.upsert(beat(description=f"edit {len(reads)}"))
        return record

    monkeypatch.setattr(Client, "get", get_then_race)
    with pytest.raises(StaleVersion):
        client.edit("beat", {"every": "20s"})
    assert len(reads) == EDIT_ATTEMPTS
    stored = real_get(client, "beat").schedule
    assert stored is not None
    assert stored.every_ms == 3_600_000  # never written over the others' edits
