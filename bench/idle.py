"""Scenario 3, idle cost: N schedules, none due for an hour; a leader and a standby.

N schedules (bench.seed, direct pipelined writes in ``Client.upsert``'s layout) fire
once a day at times spread over the second hour from now. Two ``rqbeat run``
replicas (default lease 15 s) start; after they settle, one window of a full minute
(every periodic step -- renewals, heartbeats, the alert and health looks -- comes
round in it at its real rate, nothing is extrapolated from a few seconds) over which
the benchmark reads (N = 1k, 100k and 1M; 100k only with --quick):

* CPU seconds of the leader and of the standby: ``/proc/<pid>/stat`` utime+stime
  (10 ms ticks) and ``/proc/<pid>/task/*/schedstat`` (ns), scaled to one minute;
* Redis commands sent by each replica: a ``MONITOR`` connection sees every command
  with its client's address, attributed to a replica through the local ports of its
  sockets (``/proc``); a Lua script (EVALSHA) counts as one command, the commands it
  runs inside do not. Also the delta of ``INFO commandstats`` (every command
  executed, including those inside scripts, less the benchmark's INFO calls) and
  redis-server's own CPU.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass

from redis import Redis

from bench import seed
from bench.burst import cron_at
from bench.core import Context, Result, Target
from bench.env import (
    Monitor,
    client_ports,
    cpu_seconds,
    cpu_seconds_precise,
    leader_node,
    stack,
    wait_for,
    wait_role,
)
from scheduler.clock import redis_now_ms

NAME = "idle"
TITLE = "3. Idle cost"
SETTLE_S = 3.0
WINDOW_S = 60.0


def commandstats(conn: Redis) -> Counter[str]:
    stats = conn.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def seed_idle(conn: Redis, port: int, n: int) -> None:
    """n schedules due once a day, spread over [now + 1 h, now + 2 h)."""
    base_ms = (redis_now_ms(conn) // 1000 + 3600) * 1000

    def fire_of(i: int) -> int:
        return base_ms + (i % 3600) * 1000

    seed.seed(conn, port, n, fire_of, lambda _i, fire: cron_at(fire))


@dataclass
class Window:
    """What one measurement window saw, scaled to one minute."""

    cpu: dict[str, tuple[float, float]]  # role -> (stat ticks, schedstat) CPU-s/min
    executed: Counter[str]  # INFO commandstats delta (includes commands run inside Lua)
    sent: dict[str, float]  # role -> commands sent per minute (MONITOR)
    sent_by_name: Counter[str]
    redis_cpu: float
    per_min: float


def window(conn: Redis, monitor: Monitor, roles: dict[str, int], redis_pid: int, seconds: float) -> Window:
    before = {r: (cpu_seconds(p), cpu_seconds_precise(p)) for r, p in roles.items()}
    redis_before = cpu_seconds_precise(redis_pid)
    calls0, t0, w0 = commandstats(conn), time.time(), time.monotonic()
    time.sleep(seconds)
    calls1, t1, elapsed = commandstats(conn), time.time(), time.monotonic() - w0
    per_min = 60.0 / elapsed
    cpu = {
        r: ((cpu_seconds(p) - before[r][0]) * per_min, (cpu_seconds_precise(p) - before[r][1]) * per_min)
        for r, p in roles.items()
    }
    executed = calls1 - calls0
    executed["info"] = 0  # the benchmark's own
    ports = {r: client_ports(p) for r, p in roles.items()}
    events = [(port, cmd) for stamp, port, cmd in list(monitor.events) if t0 <= stamp <= t1]
    sent = {r: sum(1 for port, _ in events if port in ports[r]) * per_min for r in roles}
    by_name = Counter(cmd for port, cmd in events if any(port in p for p in ports.values()))
    redis_cpu = (cpu_seconds_precise(redis_pid) - redis_before) * per_min
    return Window(cpu, executed, sent, by_name, redis_cpu, per_min)


def record(res: Result, label: str, w: Window, target: bool) -> None:
    for role, (ticks, precise) in w.cpu.items():
        res.metric(
            f"N={label}: {role} CPU (schedstat)",
            "CPU-s/min",
            target=Target("<=", 0.05, "≤ 0.05") if target else None,
            digits=4,
        ).values.append(precise)
        res.metric(f"N={label}: {role} CPU (stat utime+stime)", "CPU-s/min", digits=3).values.append(ticks)
    for role, rate in w.sent.items():
        res.metric(f"N={label}: commands sent by the {role}", "cmd/min", digits=0).values.append(rate)
    res.metric(
        f"N={label}: commands sent, both replicas (MONITOR)",
        "cmd/min",
        target=Target("<=", 120, "≤ 120") if target else None,
        digits=0,
    ).values.append(sum(w.sent.values()))
    res.metric(
        f"N={label}: commands executed incl. inside Lua (commandstats)",
        "cmd/min",
        target=Target("<=", 60, "≤ 60") if target else None,
        digits=0,
    ).values.append(sum(w.executed.values()) * w.per_min)
    res.metric(f"N={label}: redis-server CPU", "CPU-s/min", digits=4).values.append(w.redis_cpu)


def run(ctx: Context) -> Result:
    sizes = [100_000] if ctx.quick else [1_000, 100_000, 1_000_000]
    window_s = WINDOW_S
    res = Result(NAME, TITLE, __doc__ or "")
    for n in sizes:
        label = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        with ctx.redis(f"idle-{label}") as server, stack(ctx.workdir / f"idle-{label}", server) as st:
            conn = server.client()
            t0 = time.monotonic()
            seed_idle(conn, server.port, n)
            ctx.log(f"idle n={n}: seeded in {time.monotonic() - t0:.1f}s")
            procs = {"r1": st.replica("r1"), "r2": st.replica("r2")}
            leader = wait_for(functools.partial(leader_node, conn), 30, what="a leader")
            standby = "r2" if leader == "r1" else "r1"
            wait_role(conn, standby, "standby")
            time.sleep(SETTLE_S)
            roles = {"leader": procs[leader].pid, "standby": procs[standby].pid}
            monitor = Monitor(server.port)
            monitor.start()
            sent: Counter[str] = Counter()
            executed: Counter[str] = Counter()
            try:
                for rep in range(1):  # one full minute is the repetition
                    ctx.log(f"idle n={n} window {rep + 1}/1 ({window_s:.0f}s)")
                    w = window(conn, monitor, roles, server.proc.pid, window_s)  # type: ignore[union-attr]
                    record(res, label, w, target=n == sizes[-1])
                    sent += w.sent_by_name
                    executed += w.executed
            finally:
                monitor.close()
        res.notes.append(
            f"N={label}, 1 window of {window_s:.0f}s: sent {_top(sent)}; "
            f"executed (commandstats) {_top(executed)}."
        )
    return res


def _top(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common(12)) or "none"
