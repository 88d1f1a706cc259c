"""Runs end to end, with real processes: a ``rqbeat run`` replica, ``rqbeat worker``s
(or a stock ``rq worker``), ``kill -9``, failing jobs, edits under a run in flight,
hand-damaged definitions and fires missed while no scheduler was up.

Every wait polls with a deadline (``wait_for``); the few "nothing else happens"
checks poll for a bounded time (``holds``). Schedules that must fire exactly when the
test says so are hourly and made due with ``Client.trigger``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from redis import Redis

from devtools.cluster import Cluster, kill_session, runs_per_key
from devtools.processes import Process, wait_for
from scheduler import policy
from scheduler.clock import iso, parse_iso_ms, redis_now_ms
from scheduler.keys import Keys
from scheduler.model import Schedule
from scheduler.records import text
from scheduler.store import Client, HistoryEntry

pytestmark = pytest.mark.integration

K = Keys()
HOUR_MS = 3_600_000


# -- helpers ----------------------------------------------------------------------------


def start_replica(cluster: Cluster, conn: Redis) -> Process:
    replica = cluster.replica("r1")
    cluster.wait_leader(conn)
    return replica


def schedule(sid: str, target: str, *args: Any, **changes: Any) -> Schedule:
    values: dict[str, Any] = {"id": sid, "target": f"tests.jobs.{target}", "args": args, **changes}
    values.setdefault("every_ms", HOUR_MS)
    return Schedule(**values)


def history(conn: Redis, sid: str) -> list[HistoryEntry]:
    return Client(conn).history(sid, count=1000)


def entries(conn: Redis, sid: str, *events: str) -> list[HistoryEntry]:
    return [e for e in history(conn, sid) if e.event in events]


def fire_of(entry: HistoryEntry) -> int:
    return parse_iso_ms(entry.fields["fire_at"])


def raw_state(conn: Redis, sid: str) -> dict[str, str]:
    """The schedule hash as stored (not as ``Client.get`` interprets it)."""
    return {str(text(k)): str(text(v)) for k, v in conn.hgetall(K.schedule(sid)).items()}


def rq_status(conn: Redis, job_id: str) -> str | None:
    return text(conn.hget(f"rq:job:{job_id}", "status"))


def started_job(conn: Redis, tag: str, index: int = 0, timeout: float = 15) -> str:
    """The job id of the ``index``-th run of ``tests.jobs.slow(..., tag)`` to start."""
    return wait_for(
        lambda: text(conn.lindex(f"test:{tag}:started", index)),
        timeout,
        what=f"slow job #{index} of {tag!r} to start",
    )


def split_job_id(job_id: str) -> tuple[str, int, int]:
    sid, fire, attempt = job_id.rsplit("-", 2)
    return sid, int(fire), int(attempt)


def holds(probe: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert ``probe()`` stays true for ``seconds`` (for "nothing else happens")."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert probe(), what
        time.sleep(0.05)


def error_lines(proc: Process, needle: str) -> list[str]:
    return [line for line in proc.output().splitlines() if " ERROR " in line and needle in line]


def count_events(conn: Redis, sid: str, event: str, n: int = 1) -> Callable[[], bool]:
    return lambda: len(entries(conn, sid, event)) >= n


# -- A. a worker killed in the middle of a job -------------------------------------------


def test_killed_worker_run_is_retried_for_the_same_fire(
    cluster: Cluster, conn: Redis, client: Client
) -> None:
    start_replica(cluster, conn)
    w1 = cluster.worker("w1", monitoring_interval=1, grace=2)
    client.upsert(schedule("killed", "slow", 1.5, "killed"))
    client.trigger("killed")
    job_1 = started_job(conn, "killed")
    sid, fire_ms, attempt = split_job_id(job_1)
    assert (sid, attempt) == ("killed", 1)
    assert len(kill_session(w1)) == 2  # the worker and its horse, mid-job: no ack, RQ not told

    # the heartbeat (1 s + 2 s grace) expires; the watchdog calls the run abandoned and
    # retries the same fire after the back-off
    wait_for(count_events(conn, sid, "dispatched", 2), 20, what="the retry to be dispatched")
    dispatched = entries(conn, sid, "dispatched")
    failed = entries(conn, sid, "failed")
    assert [(fire_of(e), e.fields["attempt"]) for e in dispatched] == [(fire_ms, "1"), (fire_ms, "2")]
    assert dispatched[1].fields["job_id"] == f"{sid}-{fire_ms}-2"
    assert len(failed) == 1
    assert "abandoned" in failed[0].fields["error"]
    assert (fire_of(failed[0]), failed[0].fields["job_id"], failed[0].fields["next_attempt"]) == (
        fire_ms,
        job_1,
        "2",
    )
    assert rq_status(conn, job_1) == "started"  # RQ itself never learnt the horse died

    # no worker: the retry waits in the queue and the schedule does not advance
    def pending_on_the_same_fire() -> bool:
        state = raw_state(conn, sid)
        return (state["state"], state["fire_at"], state["attempt"]) == ("running", iso(fire_ms), "2")

    holds(pending_on_the_same_fire, 1.0, "the schedule must stay on its unacknowledged fire")
    assert conn.zscore(K.due, sid) is None
    assert runs_per_key(conn) == {}

    cluster.worker("w2", monitoring_interval=1, grace=2)
    wait_for(count_events(conn, sid, "succeeded"), 15, what="the retry to succeed")
    assert [e.event for e in history(conn, sid)] == [
        "triggered",
        "dispatched",
        "failed",
        "dispatched",
        "succeeded",
    ]
    assert runs_per_key(conn, "killed") == {f"{sid}:{fire_ms}": 1}
    state = raw_state(conn, sid)
    assert state["state"] == "due"
    assert parse_iso_ms(state["fire_at"]) > fire_ms
    assert "attempt" not in state  # back to 1: absent
    assert rq_status(conn, f"{sid}-{fire_ms}-2") == "finished"


# -- B. jobs that raise ------------------------------------------------------------------


def check_backoff(sid: str, fire_ms: int, failed: list[HistoryEntry]) -> None:
    """Each retry waits back-off(attempt) after its failure, and the waits grow."""
    delays = []
    for attempt, entry in enumerate(failed, start=1):
        assert fire_of(entry) == fire_ms
        assert entry.fields["next_attempt"] == str(attempt + 1)
        delay = parse_iso_ms(entry.fields["retry_at"]) - parse_iso_ms(entry.fields["at"])
        assert delay == policy.backoff_ms(sid, fire_ms, attempt)
        delays.append(delay)
    assert delays == sorted(delays)
    retry_at = [parse_iso_ms(e.fields["retry_at"]) for e in failed]
    assert retry_at == sorted(retry_at) and len(set(retry_at)) == len(retry_at)


def test_failing_fire_is_retried_with_backoff_until_it_succeeds(
    cluster: Cluster, conn: Redis, client: Client
) -> None:
    start_replica(cluster, conn)
    cluster.worker("w1")
    sid = "flaky"
    client.upsert(schedule(sid, "fail_until", 3))
    client.trigger(sid)
    fire_ms = wait_for(lambda: client.get(sid).fire_ms, what="the triggered fire")

    seen_fires: set[str] = set()

    def succeeded() -> bool:
        state = raw_state(conn, sid)
        if state.get("last_result") != "succeeded":
            seen_fires.add(state["fire_at"])
        return bool(entries(conn, sid, "succeeded"))

    wait_for(succeeded, 20, what="attempt 3 to succeed")
    assert seen_fires == {iso(fire_ms)}, "the fire moved while its runs were failing"
    dispatched = entries(conn, sid, "dispatched")
    assert [(fire_of(e), e.fields["attempt"]) for e in dispatched] == [(fire_ms, str(a)) for a in (1, 2, 3)]
    failed = entries(conn, sid, "failed")
    check_backoff(sid, fire_ms, failed)
    for retry, failure in zip(dispatched[1:], failed, strict=True):
        assert parse_iso_ms(retry.fields["at"]) >= parse_iso_ms(failure.fields["retry_at"])
    assert "attempt 2 fails" in failed[1].fields["error"]
    assert runs_per_key(conn) == {f"{sid}:{fire_ms}": 1}
    assert runs_per_key(conn, "failures") == {f"{sid}:{fire_ms}": 2}
    state = raw_state(conn, sid)
    assert (state["state"], state.get("attempt"), state["last_result"]) == ("due", None, "succeeded")
    assert parse_iso_ms(state["fire_at"]) > fire_ms


def test_fire_is_given_up_after_max_attempts(cluster: Cluster, conn: Redis, client: Client) -> None:
    start_replica(cluster, conn)
    cluster.worker("w1")
    sid = "hopeless"
    client.upsert(schedule(sid, "fail", "kaput", max_attempts=3))
    client.trigger(sid)
    wait_for(count_events(conn, sid, "gave_up"), 20, what="the fire to be given up")

    events = [e.event for e in history(conn, sid)]
    assert events == ["triggered", *["dispatched", "failed"] * 2, "dispatched", "gave_up"]
    dispatched = entries(conn, sid, "dispatched")
    fire_ms = fire_of(dispatched[0])
    assert [(fire_of(e), e.fields["attempt"]) for e in dispatched] == [(fire_ms, str(a)) for a in (1, 2, 3)]
    check_backoff(sid, fire_ms, entries(conn, sid, "failed"))
    gave_up = entries(conn, sid, "gave_up")[0]
    assert (fire_of(gave_up), gave_up.fields["job_id"]) == (fire_ms, f"{sid}-{fire_ms}-3")
    assert "kaput" in gave_up.fields["error"]
    assert runs_per_key(conn, "failures") == {f"{sid}:{fire_ms}": 3}
    # the next fire is scheduled, from attempt 1
    state = raw_state(conn, sid)
    next_fire = (fire_ms // HOUR_MS + 1) * HOUR_MS
    assert (state["state"], state["fire_at"], state.get("attempt")) == ("due", iso(next_fire), None)
    assert conn.zscore(K.due, sid) == next_fire / 1000


def test_pause_on_failure(cluster: Cluster, conn: Redis, client: Client) -> None:
    start_replica(cluster, conn)
    cluster.worker("w1")
    sid = "fragile"
    client.upsert(schedule(sid, "fail", every_ms=1000, pause_on_failure=True))
    wait_for(lambda: raw_state(conn, sid)["state"] == "paused", 15, what="the schedule to pause")

    failed = entries(conn, sid, "failed")
    assert len(failed) == 1
    assert failed[0].fields["retry_at"] == ""
    assert conn.zscore(K.due, sid) is None
    assert conn.zscore(K.running, sid) is None
    assert client.get(sid).state == "paused"
    # an every-second schedule, yet nothing more runs
    holds(lambda: len(entries(conn, sid, "dispatched")) == 1, 1.5, "a paused schedule was dispatched")
    assert sum(runs_per_key(conn, "failures").values()) == 1


# -- C. edits under a run in flight --------------------------------------------------------


def test_edit_while_in_flight_takes_effect_after_the_run(
    cluster: Cluster, conn: Redis, client: Client
) -> None:
    start_replica(cluster, conn)
    cluster.worker("w1")
    sid = "edited"
    client.upsert(schedule(sid, "slow", 1.0, "old"))
    client.trigger(sid)
    old_job = started_job(conn, "old")
    _, old_fire, _ = split_job_id(old_job)
    # new arguments and a new trigger while the old definition's run is in flight
    result = client.upsert(schedule(sid, "slow", 0.0, "new", every_ms=2000))
    assert result.action == "updated"
    assert raw_state(conn, sid)["job_id"] == old_job

    wait_for(lambda: len(runs_per_key(conn, "new")) >= 2, 15, what="two runs of the new definition")
    assert rq_status(conn, old_job) == "finished"
    # the run in flight finished once with its own arguments; none ran again with them
    assert runs_per_key(conn, "old") == {f"{sid}:{old_fire}": 1}
    # the next fires follow the new trigger: every 2 s, on its grid, after the old fire
    new_fires = sorted(int(key.rsplit(":", 1)[1]) for key in runs_per_key(conn, "new"))
    assert all(f % 2000 == 0 for f in new_fires), new_fires
    assert new_fires[0] > old_fire
    assert new_fires[1] - new_fires[0] == 2000
    assert set(runs_per_key(conn, "new").values()) == {1}
    succeeded = entries(conn, sid, "succeeded")
    assert (fire_of(succeeded[0]), succeeded[0].fields["job_id"]) == (old_fire, old_job)
    assert parse_iso_ms(raw_state(conn, sid)["fire_at"]) % 2000 == 0


def test_remove_while_in_flight_leaves_nothing_behind(cluster: Cluster, conn: Redis, client: Client) -> None:
    start_replica(cluster, conn)
    cluster.worker("w1")
    sid = "removed"
    client.upsert(schedule(sid, "slow", 1.0, "removed", every_ms=1000))
    job_id = started_job(conn, "removed")
    assert client.remove(sid)

    wait_for(lambda: rq_status(conn, job_id) == "finished", 10, what="the run in flight to finish")
    assert len(runs_per_key(conn, "removed")) == 1

    def gone() -> bool:
        return (
            conn.zscore(K.due, sid) is None
            and conn.zscore(K.running, sid) is None
            and not conn.exists(K.schedule(sid), K.history(sid))
            and not conn.sismember(K.ids, sid)
        )

    # longer than a watchdog look (1 s after dispatch) and an every-second fire
    holds(gone, 2.0, "a removed schedule came back")
    assert conn.llen("test:removed:started") == 1


# -- D. a stock rq worker ----------------------------------------------------------------------


def test_plain_rq_worker_runs_are_acked_by_the_watchdog(
    cluster: Cluster, conn: Redis, client: Client
) -> None:
    replica = start_replica(cluster, conn)
    cluster.plain_rq_worker("p1")
    sid = "plain"
    client.upsert(schedule(sid, "record", every_ms=1000))
    wait_for(count_events(conn, sid, "succeeded", 4), 20, what="four acknowledged runs")

    runs = runs_per_key(conn)
    assert set(runs.values()) == {1}, f"a fire ran twice: {runs}"
    succeeded = entries(conn, sid, "succeeded")
    fires = [fire_of(e) for e in succeeded]
    assert fires == sorted(set(fires))
    assert all(f % 1000 == 0 for f in fires)
    assert fires[-1] - fires[0] <= 2000 * (len(fires) - 1), f"it fell behind: {fires}"
    for entry in succeeded:
        assert rq_status(conn, entry.fields["job_id"]) == "finished"
        assert f"{sid}:{fire_of(entry)}" in runs
    assert not entries(conn, sid, "failed")

    def acked_lines() -> list[str]:
        return [line for line in replica.output().splitlines() if f"acked schedule={sid}" in line]

    # the log line follows the ack's write: read it when it has arrived, not before
    wait_for(lambda: len(acked_lines()) >= 4, 10, what="four 'acked' log lines")
    acked = acked_lines()
    assert all("by=watchdog" in line for line in acked)
    assert_every_fire_accounted(conn, sid, fires[0])


# -- E. a definition damaged by hand ---------------------------------------------------------


def assert_marked_broken(conn: Redis, sid: str, needle: str) -> None:
    state = raw_state(conn, sid)
    assert state["state"] == "broken"
    assert needle in state["error"]
    assert conn.zscore(K.due, sid) is None
    assert conn.zscore(K.running, sid) is None
    assert [e.event for e in history(conn, sid)][-1] == "broken"


_DAMAGE_IF_IDLE = """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
local now = redis.call('TIME')
if not score or tonumber(score) < tonumber(now[1]) + tonumber(now[2]) / 1e6 + 0.5 then return 0 end
redis.call('HSET', KEYS[1], 'definition', ARGV[2])
return 1
"""


def damage_while_idle(conn: Redis, sid: str, definition: str) -> bool:
    """HSET the definition by hand, but only while the schedule is due 0.5 s or more
    from now (one script, so the leader cannot dispatch it in between)."""
    keys = [K.schedule(sid), K.due]
    return bool(conn.eval(_DAMAGE_IF_IDLE, len(keys), *keys, sid, definition))


def test_corrupt_definition_is_marked_broken_once(cluster: Cluster, conn: Redis, client: Client) -> None:
    replica = start_replica(cluster, conn)
    cluster.worker("w1")
    client.upsert_many(
        [schedule("good", "record", "good", every_ms=1000), schedule("bad", "record", "bad", every_ms=2000)]
    )
    wait_for(count_events(conn, "bad", "succeeded"), 15, what="the soon-damaged schedule to run")
    # damage it while it waits in the due set (not due for 0.5 s more), so that it is
    # dispatch that finds it; damage under a run in flight is the next test
    wait_for(lambda: damage_while_idle(conn, "bad", "{garbage"), 10, what="bad to be idle")

    wait_for(lambda: raw_state(conn, "bad")["state"] == "broken", 10, what="the leader to mark it broken")
    assert_marked_broken(conn, "bad", "not valid JSON")
    before = len(entries(conn, "good", "succeeded"))
    wait_for(count_events(conn, "good", "succeeded", before + 3), 15, what="the other schedule to go on")
    assert replica.alive()
    assert_marked_broken(conn, "bad", "not valid JSON")
    assert len(error_lines(replica, "schedule=bad")) == 1, replica.output()
    assert client.get("bad").state == "broken"


def test_corrupt_definition_under_a_run_in_flight(cluster: Cluster, conn: Redis, client: Client) -> None:
    replica = start_replica(cluster, conn)
    cluster.worker("w1")
    client.upsert_many(
        [schedule("good", "record", "good", every_ms=1000), schedule("bad", "slow", 1.5, "bad")]
    )
    client.trigger("bad")
    job_id = started_job(conn, "bad")
    conn.hset(K.schedule("bad"), "definition", "{garbage")

    wait_for(lambda: rq_status(conn, job_id) == "finished", 10, what="the run in flight to finish")
    wait_for(lambda: raw_state(conn, "bad")["state"] == "broken", 10, what="the leader to mark it broken")
    assert_marked_broken(conn, "bad", "")
    before = len(entries(conn, "good", "succeeded"))
    wait_for(count_events(conn, "good", "succeeded", before + 3), 15, what="the other schedule to go on")
    assert replica.alive(), replica.output()
    assert_marked_broken(conn, "bad", "")
    assert "succeeded" not in [e.event for e in history(conn, "bad")]
    assert len(error_lines(replica, "schedule=bad")) == 1, replica.output()


# -- F. misfire policies after an outage ---------------------------------------------------


def assert_every_fire_accounted(conn: Redis, sid: str, first_fire: int) -> None:
    """Every fire from ``first_fire`` to the last dispatched one was dispatched exactly
    once or counted in a ``missed`` history entry: nothing is dropped silently."""
    events = history(conn, sid)
    last = max(i for i, e in enumerate(events) if e.event == "dispatched")
    events = events[: last + 1]  # a later 'missed' counts fires before a fire not yet dispatched
    dispatched = [fire_of(e) for e in events if e.event == "dispatched"]
    assert len(dispatched) == len(set(dispatched)), f"a fire was dispatched twice: {dispatched}"
    missed = sum(int(e.fields["count"]) for e in events if e.event == "missed")
    span = (max(dispatched) - first_fire) // 1000 + 1
    assert len(dispatched) + missed == span, (dispatched, missed, first_fire)


def run_fires(conn: Redis, sid: str) -> list[int]:
    """Fires of ``sid`` in the order their runs happened (tests.jobs.record's log)."""
    order = [str(text(item)) for item in conn.lrange("test:runs:order", 0, -1)]
    keys = [item.split("|", 1)[0] for item in order]
    return [int(key.rsplit(":", 1)[1]) for key in keys if key.startswith(f"{sid}:")]


def test_misfire_policies_after_an_outage(cluster: Cluster, conn: Redis, client: Client) -> None:
    cluster.worker("w1")
    policies: dict[str, dict[str, Any]] = {
        "mf-coalesce": {"misfire": "coalesce"},
        "mf-all": {"misfire": "all"},
        "mf-skip": {"misfire": "skip"},
        "mf-window": {"misfire": "all", "catchup_window_ms": 2000},
    }
    client.upsert_many([schedule(sid, "record", every_ms=1000, **p) for sid, p in policies.items()])
    first = {sid: client.get(sid).fire_ms for sid in policies}
    assert len(set(first.values())) == 1
    f1 = first["mf-all"]
    assert f1 is not None
    # no scheduler is up while fires F1 .. F1+5 s pass
    wait_for(lambda: redis_now_ms(conn) >= f1 + 5_300, 10, interval=0.05, what="fires to be missed")
    assert not conn.exists("test:runs")
    up_ms = redis_now_ms(conn)
    start_replica(cluster, conn)

    def caught_up() -> bool:
        """Each schedule has run twice, the last time for a fire after the restart."""
        return all(
            len(fires) >= 2 and fires[-1] > up_ms + 1000
            for fires in (run_fires(conn, sid) for sid in policies)
        )

    wait_for(caught_up, 20, interval=0.05, what="every schedule to catch up")
    assert set(runs_per_key(conn).values()) == {1}

    # coalesce: one run stands for every missed fire, then the schedule goes on
    fires = run_fires(conn, "mf-coalesce")
    missed = entries(conn, "mf-coalesce", "missed")
    assert fires[0] >= f1 + 5000
    assert int(missed[0].fields["count"]) == (fires[0] - f1) // 1000
    assert fires[1] == fires[0] + 1000

    # all: each missed fire runs, oldest first, none dropped
    fires = run_fires(conn, "mf-all")
    assert fires == [f1 + 1000 * i for i in range(len(fires))]
    assert not entries(conn, "mf-all", "missed")

    # skip: none of the missed fires runs; the first run is a fire after the restart
    fires = run_fires(conn, "mf-skip")
    skipped = entries(conn, "mf-skip", "missed")[0]
    assert fires[0] == parse_iso_ms(skipped.fields["next_fire_at"])
    assert fires[0] > parse_iso_ms(skipped.fields["at"])
    assert fires[0] > up_ms
    assert int(skipped.fields["count"]) == (fires[0] - f1) // 1000
    assert fires == [fires[0] + 1000 * i for i in range(len(fires))]

    # all within a 2 s catch-up window: fires older than the window are dropped
    fires = run_fires(conn, "mf-window")
    first_dispatch = entries(conn, "mf-window", "dispatched")[0]
    dispatched_at = parse_iso_ms(first_dispatch.fields["at"])
    assert fires[0] == fire_of(first_dispatch)
    assert dispatched_at - 2000 <= fires[0] < dispatched_at - 2000 + 1000
    dropped = entries(conn, "mf-window", "missed")[0]
    assert int(dropped.fields["count"]) == (fires[0] - f1) // 1000 >= 3
    assert fires == [fires[0] + 1000 * i for i in range(len(fires))]

    for sid in policies:
        assert_every_fire_accounted(conn, sid, f1)
