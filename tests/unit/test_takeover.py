"""The pure parts of the fast takeover: the lease connection's record and when a
standby asks about it (scheduler.engine.takeover)."""

from __future__ import annotations

from scheduler.engine.takeover import (
    GRACE_MS,
    NO_LEASE_CONNECTION,
    RECHECK_S,
    Asked,
    LeaseConnection,
    Sighting,
    Verdict,
    judge,
    next_check_at,
    node_of,
    parse_record,
)

TOKEN = "7:replica-a"
NODE = "5f0e3c1b2a4d6e8f00112233445566778899aabb"  # a server's run id
OTHER_NODE = "0123456789abcdef0123456789abcdef01234567"
CONN = LeaseConnection(42, NODE)
NO_SUCH_CLIENT = "The client ID you want redirect to does not exist"


def sighting(
    *, due_ms: int | None, now_ms: int, conn: LeaseConnection | None = CONN, token: str | None = TOKEN
) -> Sighting:
    return Sighting(token=token, conn=conn, due_ms=due_ms, now_ms=now_ms, read_at=100.0)


def test_the_record_counts_only_for_the_lease_it_names() -> None:
    assert parse_record(f"{TOKEN} {CONN.encode()}", TOKEN) == CONN
    assert parse_record(f"{TOKEN} 42 {NODE}", "8:replica-b") is None  # an older reign's record
    assert parse_record(None, TOKEN) is None
    assert parse_record(f"{TOKEN} 42 {NODE}", None) is None  # nobody holds the lease
    assert parse_record(f"{TOKEN} not-a-number {NODE}", TOKEN) is None
    assert parse_record(f"{TOKEN} {NO_LEASE_CONNECTION.encode()}", TOKEN) is None  # no lease connection
    assert parse_record(f"{TOKEN} 42", TOKEN) is None  # an older rqbeat's record: no server named
    assert parse_record(f"7:host with space 9 {NODE}", "7:host with space") == LeaseConnection(9, NODE)


def test_a_leader_is_gone_only_when_its_own_server_has_no_such_client() -> None:
    assert judge(CONN, NODE, NO_SUCH_CLIENT) is Verdict.GONE
    assert judge(CONN, NODE, None) is Verdict.ALIVE


def test_an_id_recorded_on_another_server_says_nothing() -> None:
    """The slot moved to another primary (or the server restarted): the record still
    names the old server's client id, which this server may not have -- or may have
    given to someone else. Neither answer is about the leader: wait."""
    assert judge(CONN, OTHER_NODE, NO_SUCH_CLIENT) is Verdict.UNKNOWN
    assert judge(CONN, OTHER_NODE, None) is Verdict.UNKNOWN
    assert judge(LeaseConnection(42, NO_LEASE_CONNECTION.node), None, NO_SUCH_CLIENT) is Verdict.UNKNOWN
    assert judge(CONN, None, NO_SUCH_CLIENT) is Verdict.UNKNOWN  # INFO refused: which server is unknown


def test_a_refused_check_says_nothing() -> None:
    assert judge(CONN, NODE, "NOPERM this user has no permissions to run the 'client|tracking' command") is (
        Verdict.UNKNOWN
    )


def test_the_server_is_named_by_its_run_id() -> None:
    assert node_of({"redis_version": "7.2.4", "run_id": NODE}) == NODE
    assert node_of({"redis_version": "7.2.4"}) is None
    assert node_of(Exception("NOPERM")) is None  # a pipeline's error reply


def test_the_check_is_planned_grace_after_the_first_fire() -> None:
    seen = sighting(due_ms=10_000, now_ms=9_000)
    assert seen.check_at() == 100.0 + (1_000 + GRACE_MS) / 1000
    assert not seen.overdue()
    assert sighting(due_ms=10_000, now_ms=10_000 + GRACE_MS).overdue()
    assert not sighting(due_ms=10_000, now_ms=10_000 + GRACE_MS - 1).overdue()


def test_nothing_to_check_without_a_holder_a_record_or_a_fire() -> None:
    assert sighting(due_ms=None, now_ms=0).check_at() is None
    assert sighting(due_ms=5, now_ms=0, conn=None).check_at() is None
    assert sighting(due_ms=5, now_ms=0, token=None).check_at() is None


def test_a_late_fire_of_a_live_leader_is_asked_about_again() -> None:
    """The leader was alive when asked about its overdue fire; if it dies before it
    sends that fire, nothing else would ever make the standby ask (a dead leader sends
    no event): the same fire is asked about again RECHECK_S later."""
    seen = sighting(due_ms=10_000, now_ms=10_000 + GRACE_MS)
    assert next_check_at(seen, None) == seen.check_at()
    asked = Asked(TOKEN, 10_000, at=250.0)
    assert next_check_at(seen, asked) == 250.0 + RECHECK_S
    # Another fire, or another reign, is planned as usual.
    assert next_check_at(seen, Asked(TOKEN, 9_000, at=250.0)) == seen.check_at()
    assert next_check_at(seen, Asked("8:replica-b", 10_000, at=250.0)) == seen.check_at()
    assert next_check_at(sighting(due_ms=None, now_ms=0), asked) is None
