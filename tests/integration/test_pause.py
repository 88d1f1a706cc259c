"""Pause means pause: the fires that pass while a schedule is paused never run, with
every misfire policy, whichever way the pause, the resume and the ack of a run in
flight interleave. Real replica, real workers; runs are counted per fire key.

Each test runs one every-second schedule per misfire policy side by side. The runs in
flight are ``tests.jobs.gated``: they end when the test opens their gate, so "the ack
comes before / after the resume" is an order the test sets, not a timing bet.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis import Redis

from devtools.cluster import Cluster, runs_per_key
from devtools.processes import wait_for
from scheduler import scripts
from scheduler.clock import iso, redis_now_ms
from scheduler.engine import runs
from scheduler.keys import Keys
from scheduler.model import Misfire, Schedule
from scheduler.protocol import ResumeReply
from scheduler.records import text
from scheduler.store import Client

pytestmark = pytest.mark.integration

K = Keys()
POLICIES = (Misfire.ALL, Misfire.COALESCE, Misfire.SKIP)
#: Fires that pass while paused: the pause lasts this long (Redis time).
PAUSE_MS = 2_500


def every_second(sid: str, misfire: Misfire, target: str = "gated") -> Schedule:
    return Schedule(id=sid, target=f"tests.jobs.{target}", args=(sid,), every_ms=1000, misfire=misfire)


def run_count(conn: Redis, sid: str, n: int) -> Callable[[], bool]:
    return lambda: len(runs_per_key(conn, sid)) >= n


def acked(conn: Redis, sid: str) -> Callable[[], bool]:
    return lambda: not conn.hexists(K.schedule(sid), "job_id")


def until_redis_time(conn: Redis, at_ms: int) -> None:
    wait_for(lambda: redis_now_ms(conn) >= at_ms, 10, what=f"Redis time {iso(at_ms)}")


def open_gate(conn: Redis, sid: str, runs_: int = 1) -> None:
    conn.rpush(f"test:{sid}:gate", *["go"] * runs_)


def first_started_fire(conn: Redis, sid: str) -> int:
    job_id = wait_for(lambda: text(conn.lindex(f"test:{sid}:started", 0)), 15, what=f"{sid} to start")
    return int(job_id.rsplit("-", 2)[1])


def fires_run(conn: Redis, sid: str) -> list[int]:
    counts = runs_per_key(conn, sid)
    assert set(counts.values()) == {1}, f"{sid}: a fire ran twice: {counts}"
    return sorted(int(key.rsplit(":", 1)[1]) for key in counts)


def resumed_at(client: Client, sid: str) -> int:
    return next(e.at_ms for e in reversed(client.history(sid, 1000)) if e.event == "resumed")


def dropped_by(client: Client, sid: str, until_ms: int) -> int:
    """Fires recorded as dropped (skipped by the resume, or missed) up to ``until_ms``."""
    entries = [e for e in client.history(sid, 1000) if e.at_ms <= until_ms]
    return sum(int(e.fields["count"]) for e in entries if e.event in ("skipped", "missed"))


def assert_paused_fires_never_ran(client: Client, conn: Redis, sid: str, in_flight: int | None) -> None:
    """Every fire up to the resume is accounted for: the one in flight at the pause
    ran, all the others are recorded as dropped; nothing up to the resume ran."""
    resumed_ms = resumed_at(client, sid)
    ran = fires_run(conn, sid)
    before = [f for f in ran if f <= resumed_ms]
    assert before == ([in_flight] if in_flight is not None else []), f"{sid}: ran fires of the pause"
    assert any(f > resumed_ms for f in ran), f"{sid}: never fired after the resume"
    first = in_flight + 1000 if in_flight is not None else None
    if first is not None:
        assert dropped_by(client, sid, resumed_ms) == len(range(first, resumed_ms + 1, 1000))
    assert [e.event for e in client.history(sid, 1000)].count("skipped") == 1


def start(cluster: Cluster, conn: Redis, workers: int) -> None:
    cluster.replica("r1")
    cluster.wait_leader(conn)
    for n in range(workers):
        cluster.worker(f"w{n}")


def test_pause_then_ack_then_resume(cluster: Cluster, conn: Redis, client: Client) -> None:
    start(cluster, conn, workers=len(POLICIES))
    sids = [f"pause-ack-resume-{p}" for p in POLICIES]
    for sid, policy in zip(sids, POLICIES, strict=True):
        client.upsert(every_second(sid, policy))
    in_flight = {sid: first_started_fire(conn, sid) for sid in sids}
    for sid in sids:
        client.pause(sid)
    paused_ms = redis_now_ms(conn)
    for sid in sids:
        open_gate(conn, sid)  # the run in flight at the pause ends, and is acked, while paused
    for sid in sids:
        wait_for(acked(conn, sid), 15, what=f"{sid}'s ack")
        assert text(conn.hget(K.schedule(sid), "state")) == "paused"
    until_redis_time(conn, paused_ms + PAUSE_MS)
    for sid in sids:
        client.resume(sid)
        open_gate(conn, sid, 20)
    for sid in sids:
        wait_for(run_count(conn, sid, 2), 15, what=f"{sid} to fire after the resume")
        assert_paused_fires_never_ran(client, conn, sid, in_flight[sid])


def test_pause_then_resume_then_ack(cluster: Cluster, conn: Redis, client: Client) -> None:
    start(cluster, conn, workers=len(POLICIES))
    sids = [f"pause-resume-ack-{p}" for p in POLICIES]
    for sid, policy in zip(sids, POLICIES, strict=True):
        client.upsert(every_second(sid, policy))
    in_flight = {sid: first_started_fire(conn, sid) for sid in sids}
    for sid in sids:
        client.pause(sid)
    until_redis_time(conn, redis_now_ms(conn) + PAUSE_MS)
    for sid in sids:
        client.resume(sid)
        # resumed with the run still in flight: its ack re-arms it
        assert text(conn.hget(K.schedule(sid), "state")) == "running"
        open_gate(conn, sid, 20)
    for sid in sids:
        wait_for(run_count(conn, sid, 2), 15, what=f"{sid} to fire after the resume")
        assert_paused_fires_never_ran(client, conn, sid, in_flight[sid])


def test_pause_while_due_then_resume(cluster: Cluster, conn: Redis, client: Client) -> None:
    sids = [f"pause-due-{p}" for p in POLICIES]
    for sid, policy in zip(sids, POLICIES, strict=True):
        client.upsert(every_second(sid, policy, target="record"))
    first = {sid: client.get(sid).fire_ms for sid in sids}
    until_redis_time(conn, max(f or 0 for f in first.values()) + 1_500)  # due, nobody dispatches
    for sid in sids:
        assert client.get(sid).state == "due"
        client.pause(sid)
    until_redis_time(conn, redis_now_ms(conn) + PAUSE_MS)
    for sid in sids:
        client.resume(sid)
    start(cluster, conn, workers=1)
    for sid in sids:
        wait_for(run_count(conn, sid, 1), 15, what=f"{sid} to fire after the resume")
        assert_paused_fires_never_ran(client, conn, sid, None)
        resumed_ms = resumed_at(client, sid)
        assert dropped_by(client, sid, resumed_ms) == len(range(first[sid] or 0, resumed_ms + 1, 1000))


# -- the races between a resume and an ack, replayed without processes -----------------


def paused_in_flight(conn: Redis, client: Client, sid: str) -> runs.InFlight:
    """A schedule with a run in flight (dispatched by hand as dispatch writes it), paused."""
    client.upsert(every_second(sid, Misfire.ALL, target="record"))
    fire = client.get(sid).fire_ms
    assert fire is not None
    job_id = f"{sid}-{fire}-1"
    conn.zrem(K.due, sid)
    conn.zadd(K.running, {sid: fire / 1000})
    conn.hset(K.schedule(sid), mapping={"state": "running", "job_id": job_id, "dispatched_at": iso(fire)})
    client.pause(sid)
    run = runs.read_in_flight(conn, K, sid)
    assert run is not None
    return run


def test_an_ack_prepared_before_a_resume_does_not_arm_a_fire_of_the_pause(
    conn: Redis, client: Client
) -> None:
    run = paused_in_flight(conn, client, "raced-ack")
    ack = runs.prepare_ack(K, run, redis_now_ms(conn) + 5_000)  # computed before the resume
    client.resume("raced-ack")
    assert text(conn.hget(K.schedule("raced-ack"), "resumed_at"))
    ack.add_to(conn, scripts.Scripts(conn))
    # the resume moved what the ack computed from: due now, the leader recomputes the
    # fire from now (fire_at '' = from the due score), never a fire of the pause
    assert text(conn.hget(K.schedule("raced-ack"), "fire_at")) == ""
    assert text(conn.hget(K.schedule("raced-ack"), "state")) == "due"
    assert conn.zscore(K.running, "raced-ack") is None


def test_a_resume_raced_by_an_ack_reads_again(conn: Redis, client: Client) -> None:
    run = paused_in_flight(conn, client, "raced-resume")
    record = client.get("raced-resume")
    runs.prepare_ack(K, run, redis_now_ms(conn)).add_to(conn, scripts.Scripts(conn))  # acked while paused
    k = K
    seen = [record.raw.get(f, "") for f in ("version", "fire_at", "job_id")]
    keys = [k.schedule("raced-resume"), k.due, k.revision, k.events, k.history("raced-resume")]
    keys += [k.paused_until, k.log, k.leader]
    args = ["raced-resume", iso(0), 0, iso(0), 100, *seen, 1, iso(0), "ops@host", "", "", ""]
    assert scripts.run(scripts.Scripts(conn).resume, keys, args) == ResumeReply.CHANGED
    assert client.resume("raced-resume") is True  # re-read: the ack's pending fire on
    assert client.get("raced-resume").state == "due"
