"""The pure parts of the fast takeover: the lease connection's record and when a
standby asks about it (scheduler.engine.takeover)."""

from __future__ import annotations

from scheduler.engine.takeover import GRACE_MS, Sighting, parse_record

TOKEN = "7:replica-a"


def sighting(
    *, due_ms: int | None, now_ms: int, client_id: int | None = 42, token: str | None = TOKEN
) -> Sighting:
    return Sighting(token=token, client_id=client_id, due_ms=due_ms, now_ms=now_ms, read_at=100.0)


def test_the_record_counts_only_for_the_lease_it_names() -> None:
    assert parse_record(f"{TOKEN} 42", TOKEN) == 42
    assert parse_record(f"{TOKEN} 42", "8:replica-b") is None  # an older reign's record
    assert parse_record(None, TOKEN) is None
    assert parse_record(f"{TOKEN} 42", None) is None  # nobody holds the lease
    assert parse_record(f"{TOKEN} not-a-number", TOKEN) is None
    assert parse_record(f"{TOKEN} 0", TOKEN) is None  # a client without one lease connection
    assert parse_record("7:host with space 9", "7:host with space") == 9  # node names may hold spaces


def test_the_check_is_planned_grace_after_the_first_fire() -> None:
    seen = sighting(due_ms=10_000, now_ms=9_000)
    assert seen.check_at() == 100.0 + (1_000 + GRACE_MS) / 1000
    assert not seen.overdue()
    assert sighting(due_ms=10_000, now_ms=10_000 + GRACE_MS).overdue()
    assert not sighting(due_ms=10_000, now_ms=10_000 + GRACE_MS - 1).overdue()


def test_nothing_to_check_without_a_holder_a_record_or_a_fire() -> None:
    assert sighting(due_ms=None, now_ms=0).check_at() is None
    assert sighting(due_ms=5, now_ms=0, client_id=None).check_at() is None
    assert sighting(due_ms=5, now_ms=0, token=None).check_at() is None
