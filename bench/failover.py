"""Scenario 6, failover: the leader dies (kill -9) or is stopped (SIGTERM).

Two ``rqbeat run`` replicas (default lease 15 s), one ``rqbeat worker``, and one
``every = "1s"`` schedule with ``misfire = "all"`` running ``bench.jobs.record``,
which counts runs per fire key (so every fire missed while leaderless must still run
exactly once). Each trial waits until a standby is up, sends the signal to the
leader 20 ms before a fire is due, and measures, from the signal:

* until the new leader's lease is in Redis (the benchmark polls the lease key every ms);
* until the first job the new leader dispatches lands in the queue (its ``dispatched``
  history entry with the new epoch; the entry ID is Redis's clock when the dispatch script ran).

A killed leader's lease connection closes with its process; the standby, finding the
fire 100 ms overdue and that client gone, deletes the dead token and takes over
(:mod:`scheduler.engine.takeover`) instead of waiting out the lease. A SIGTERM
releases the lease. The stopped replica is then replaced by a fresh one. After all
trials (20 kills and 3 SIGTERMs; 5 and 1 with --quick) the replicas stop, the
worker drains the queue, and every fire from the first to the last one dispatched is
checked: lost = no run, duplicated = >1 run.
"""

from __future__ import annotations

import math
import signal
import time

from redis import Redis

from bench.core import Context, Result, Target
from bench.env import Process, Stack, history, leader_node, sleep_until, stack, wait_for, wait_role
from scheduler import Client, Schedule
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.model import Misfire
from scheduler.records import text

NAME = "failover"
TITLE = "6. Failover"
LEASE_S = 15.0
SID = "fo-1"
SIGNALS = {"kill -9": signal.SIGKILL, "SIGTERM": signal.SIGTERM}
KILLS, QUICK_KILLS = 20, 5


def epoch_of(conn: Redis) -> int:
    token = text(conn.get("rqbeat:leader"))
    return int(token.split(":")[0]) if token else 0


def first_dispatch_of_epoch(conn: Redis, epoch: int) -> float | None:
    for entry in history(conn, SID):
        if entry.event == "dispatched" and int(entry.fields.get("epoch", "0")) >= epoch:
            return entry.at_ms + 0.5
    return None


def trial(conn: Redis, st: Stack, procs: dict[str, Process], kind: str, name: str) -> tuple[float, float]:
    """One failover; returns (signal → lease taken, signal → first dispatch), seconds."""
    leader = wait_for(lambda: leader_node(conn), 30, what="a leader")
    for node in procs:
        if node != leader:
            wait_role(conn, node, "standby")
    old = epoch_of(conn)
    fire_s = math.ceil(redis_now_ms(conn) / 1000 + 0.3)
    sleep_until(fire_s - 0.02)
    procs[leader].signal(SIGNALS[kind])
    t_signal = time.time()
    wait_for(lambda: epoch_of(conn) > old, 15, 0.001, "a new leader")
    t_lease = time.time()
    landed_ms = wait_for(
        lambda: first_dispatch_of_epoch(conn, old + 1), 15, 0.005, "a dispatch by the new leader"
    )
    procs.pop(leader).stop()
    procs[name] = st.replica(name)
    wait_role(conn, name, "standby")
    return t_lease - t_signal, landed_ms / 1000 - t_signal


def check_runs(conn: Redis) -> tuple[int, int, int, int]:
    """(fires checked, lost, duplicated, missed entries) from the first fire that ran
    to the last one dispatched (the history stream is capped; the run counts are not)."""
    fires, missed = [], 0
    for entry in history(conn, SID):
        if entry.event == "dispatched":
            fires.append(parse_iso_ms(entry.fields["fire_at"]))
        missed += entry.event == "missed"
    runs = {str(text(k)): int(v) for k, v in conn.hgetall("bench:runs").items()}
    fires += [int(key.rsplit(":", 1)[1]) for key in runs]
    expected = range(min(fires), max(fires) + 1, 1000)
    lost = sum(1 for f in expected if runs.get(f"{SID}:{f}", 0) == 0)
    dup = sum(1 for v in runs.values() if v > 1)
    return len(expected), lost, dup, missed


def run(ctx: Context) -> Result:
    res = Result(NAME, TITLE, __doc__ or "")
    trials = [*["kill -9"] * (QUICK_KILLS if ctx.quick else KILLS), *["SIGTERM"] * ctx.reps]
    with ctx.redis("failover") as server, stack(ctx.workdir / "failover", server) as st:
        conn = server.client()
        st.worker("w1")
        Client(conn).upsert(Schedule(id=SID, target="bench.jobs.record", every_ms=1000, misfire=Misfire.ALL))
        procs = {"a": st.replica("a"), "b": st.replica("b")}
        for i, kind in enumerate(trials):
            ctx.log(f"failover trial {i + 1}/{len(trials)}: {kind}")
            lease_s, dispatch_s = trial(conn, st, procs, kind, f"n{i}")
            ctx.log(f"  lease taken after {lease_s:.3f}s, first dispatch after {dispatch_s:.3f}s")
            target = Target("<=", 0.5, "≤ 0.5") if kind == "kill -9" else Target("<=", 0.2, "≤ 0.2")
            res.metric(
                f"{kind}: signal → new leader's first dispatch", "s", target=target, digits=3
            ).values.append(dispatch_s)
            res.metric(f"{kind}: signal → new lease taken", "s", digits=3).values.append(lease_s)
        time.sleep(2.0)
        for proc in list(procs.values()):
            proc.stop()
        wait_for(
            lambda: conn.llen("rq:queue:default") == 0 and conn.zcard("rqbeat:running") == 0,
            30,
            0.1,
            "the worker to drain the queue",
        )
        checked, lost, dup, missed = check_runs(conn)
    res.metric("fires lost", "fires", target=Target("<=", 0, "= 0"), digits=0).values.append(lost)
    res.metric("fires run more than once", "fires", target=Target("<=", 0, "= 0"), digits=0).values.append(
        dup
    )
    res.notes.append(
        f"{checked} consecutive fires checked over {len(trials)} failovers; {missed} `missed` "
        f"history entries (misfire = all runs every missed fire). Lease TTL {LEASE_S:.0f} s."
    )
    return res
