"""The chaos rig and its faults: real replicas, workers and Redis, broken on purpose.

:class:`Rig` runs a private ``redis-server`` (AOF, ``appendfsync always``, so even
``kill -9`` loses no acknowledged write), one :class:`TcpProxy` per replica slot,
``rqbeat run`` replicas that reach Redis only through their proxy, ``rqbeat worker``
processes and one plain ``rq worker`` (acks through the leader's watchdog). Workers
and the audit's collector talk to Redis directly.

Each fault method injects one fault, waits (with a deadline) for the cluster to
react where that is the point (a new leader), undoes it, and returns a
:class:`Fault` with wall-clock times (the same clock as Redis's ``TIME`` here). A
process restarted after a kill gets a new name (``a2``, ``w1-3``): RQ refuses a
worker name whose dead owner has not yet expired, and the audit tells runs apart by
worker name.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis.exceptions
from redis import Redis

from devtools.chaos import faults
from devtools.chaos.audit import Fault
from devtools.chaos.fleet import QUEUE, SLOW_QUEUE
from devtools.chaos.jobs import RUNS_FILE_ENV
from devtools.chaos.proxy import TcpProxy
from devtools.cluster import Cluster, kill_group, kill_session
from devtools.processes import Process, RedisServer, wait_for
from scheduler import Schedule, rqkeys
from scheduler.connection import connect
from scheduler.keys import Keys
from scheduler.records import text

log = logging.getLogger(__name__)

#: The faults of the first rig: processes killed or stopped, links cut.
BASIC_FAULTS = ("leader-kill", "leader-stop", "worker-kill", "redis-kill", "net-partition", "net-reset")
#: The faults the guarantees grew to cover (devtools/chaos/faults.py).
NEW_FAULTS = (
    "worker-skew",
    "replica-skew",
    "redis-restart",
    "redis-wipe",
    "maxmemory",
    "edit-storm",
    "overload",
)
FAULTS = BASIC_FAULTS + NEW_FAULTS
REPLICA_SLOTS = ("a", "b", "c")
WORKER_SLOTS = ("w0", "w1", "w2")
#: How long Redis stays down after ``kill -9`` before it is started again.
REDIS_OUTAGE_S = 1.5


def now_ms() -> int:
    return int(time.time() * 1000)


class Rig:
    """Everything a chaos run starts; :meth:`close` stops it all."""

    def __init__(
        self,
        workdir: Path,
        *,
        lease: str = "2s",
        lease_s: float = 2.0,
        seed: int = 1,
        hold_s: float = 20.0,
    ) -> None:
        self.workdir = workdir
        self.lease, self.lease_s = lease, lease_s
        self.rng = random.Random(seed)  # which worker, which offset, which schedules: replayable
        self.hold_s = hold_s  # how long a skew, an overload or an edit storm lasts
        self.server = RedisServer(workdir / "redis", appendonly=True)
        self.server.start()
        self.processes: list[Process] = []
        self.runs_file = workdir / "runs.jsonl"
        self.fleet_file = workdir / "fleet.toml"
        self.schedule_ids: list[str] = []
        env = {RUNS_FILE_ENV: str(self.runs_file)}
        self.cluster = Cluster(self.server.url, workdir, self.processes, env=env)
        self.keys = Keys()
        self.conn: Redis = connect(self.server.url, socket_timeout_s=2.0)
        self.proxies = {slot: TcpProxy(self.server.port) for slot in REPLICA_SLOTS}
        self.replicas: dict[str, Process] = {}
        self.nodes: dict[str, str] = {}
        self.workers: dict[str, Process] = {}
        self.worker_names: dict[str, str] = {}
        self.plain: Process | None = None
        self.plain_name = "plain"
        self.faults: list[Fault] = []
        self.incidents: list[str] = []  # the cluster failed to recover: fails the run
        self.notes: list[str] = []  # worth reporting, not a failure (a worker that died with Redis)
        self._gen = itertools.count(1)

    # -- processes ----------------------------------------------------------------

    def start(self) -> None:
        for slot in REPLICA_SLOTS:
            self.start_replica(slot)
        for slot in WORKER_SLOTS:
            self.start_worker(slot)
        self.start_plain()
        wait_for(lambda: self.conn.scard(rqkeys.WORKERS) >= 4, timeout=60, what="4 RQ workers")
        self.wait_leader(timeout=30)

    def start_replica(self, slot: str, clock_offset_s: float | None = None) -> None:
        node = f"{slot}{next(self._gen)}"
        self.nodes[slot] = node
        self.replicas[slot] = self.cluster.replica(
            node, lease=self.lease, redis_url=self.proxies[slot].url, clock_offset_s=clock_offset_s
        )

    def start_worker(self, slot: str, clock_offset_s: float | None = None) -> None:
        name = f"{slot}-{next(self._gen)}"
        self.worker_names[slot] = name
        self.workers[slot] = self.cluster.worker(
            name, QUEUE, SLOW_QUEUE, monitoring_interval=1, grace=2, clock_offset_s=clock_offset_s
        )

    def start_plain(self, clock_offset_s: float | None = None) -> None:
        self.plain_name = f"plain-{next(self._gen)}"
        self.plain = self.cluster.plain_rq_worker(
            self.plain_name, QUEUE, SLOW_QUEUE, clock_offset_s=clock_offset_s
        )

    def write_fleet(self, schedules: Sequence[Schedule]) -> None:
        """The schedule file the rig applies, as a user would keep one."""
        self.fleet_file.write_text(fleet_toml(schedules))
        self.schedule_ids = [s.id for s in schedules]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``rqbeat ARGS`` against the rig's Redis, as an operator types it."""
        command = [sys.executable, "-m", "scheduler", "--redis-url", self.server.url, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def apply_fleet(self) -> None:
        done = self.cli("apply", str(self.fleet_file), "--quiet")
        if done.returncode != 0:
            raise AssertionError(f"rqbeat apply failed ({done.returncode}): {done.stderr or done.stdout}")

    def leader_slot(self) -> str | None:
        try:
            token = text(self.conn.get(self.keys.leader))
        except redis.exceptions.RedisError:
            return None
        node = token.partition(":")[2] if token else None
        return next((slot for slot, n in self.nodes.items() if n == node), None)

    def wait_leader(self, *, other_than: str | None = None, timeout: float | None = None) -> str:
        def probe() -> str | None:
            slot = self.leader_slot()
            return slot if slot and slot != other_than else None

        return wait_for(probe, timeout=timeout or self.lease_s + 15, interval=0.05, what="a new leader")

    def heal(self) -> None:
        """Undo anything left over: heal links, SIGCONT, restart what died unasked."""
        for proxy in self.proxies.values():
            proxy.heal()
        for slot, proc in self.replicas.items():
            proc.signal(signal.SIGCONT)
            if not proc.alive():
                self.incidents.append(f"replica {self.nodes[slot]} exited by itself ({proc.proc.returncode})")
                self.start_replica(slot)
        for slot, proc in self.workers.items():
            if not proc.alive():
                self.notes.append(
                    f"worker {self.worker_names[slot]} exited by itself ({proc.proc.returncode})"
                )
                self.start_worker(slot)
        if self.plain is not None and not self.plain.alive():
            self.notes.append(f"worker {self.plain_name} exited by itself ({self.plain.proc.returncode})")
            self.start_plain()

    def close(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop()
        for proxy in self.proxies.values():
            proxy.close()
        self.conn.close()
        self.server.stop()

    # -- faults -------------------------------------------------------------------

    def inject(self, kind: str) -> Fault:
        action: Callable[[], Fault] = {
            "leader-kill": self.kill_leader,
            "leader-stop": self.stop_leader,
            "worker-kill": self.kill_worker,
            "redis-kill": self.kill_redis,
            "net-partition": lambda: self.cut_leader(reset=False),
            "net-reset": lambda: self.cut_leader(reset=True),
            "worker-skew": lambda: faults.skew_worker(self),
            "replica-skew": lambda: faults.skew_replicas(self),
            "redis-restart": lambda: faults.restart_redis(self),
            "redis-wipe": lambda: faults.wipe_redis(self),
            "maxmemory": lambda: faults.fill_memory(self),
            "edit-storm": lambda: faults.edit_storm(self),
            "overload": lambda: faults.overload(self),
        }[kind]
        fault = action()
        self.faults.append(fault)
        log.info("fault %s on %s: %d ms", fault.kind, fault.target, fault.end_ms - fault.start_ms)
        return fault

    def kill_leader(self) -> Fault:
        slot = self.wait_leader()
        node, start = self.nodes[slot], now_ms()
        kill_group(self.replicas[slot])
        self._expect_leader("leader-kill", other_than=slot)
        self.start_replica(slot)
        return Fault("leader-kill", node, start, now_ms())

    def stop_leader(self) -> Fault:
        """SIGSTOP the leader past its lease (another replica takes over), then SIGCONT:
        the woken replica must find itself deposed and dispatch nothing."""
        slot = self.wait_leader()
        node, start = self.nodes[slot], now_ms()
        self.replicas[slot].signal(signal.SIGSTOP)
        try:
            self._expect_leader("leader-stop", other_than=slot)
        finally:
            self.replicas[slot].signal(signal.SIGCONT)
        return Fault("leader-stop", node, start, now_ms())

    def kill_worker(self) -> Fault:
        """kill -9 a busy rqbeat worker and its work horse mid-job, then start another."""
        slot = self._busy_worker() or WORKER_SLOTS[0]
        name, start = self.worker_names[slot], now_ms()
        kill_session(self.workers[slot])
        self.start_worker(slot)
        return Fault("worker-kill", name, start, now_ms())

    def kill_redis(self) -> Fault:
        start = now_ms()
        self.server.kill()
        time.sleep(REDIS_OUTAGE_S)  # the outage itself: how long the fault lasts
        self.server.start()
        return Fault("redis-kill", "redis", start, now_ms())

    def cut_leader(self, *, reset: bool) -> Fault:
        """Cut the leader off from Redis until another replica leads, then heal."""
        slot = self.wait_leader()
        node, start, proxy = self.nodes[slot], now_ms(), self.proxies[slot]
        kind = "net-reset" if reset else "net-partition"
        if reset:
            proxy.reset()
        else:
            proxy.partition()
        try:
            self._expect_leader(kind, other_than=slot)
        finally:
            proxy.heal()
        return Fault(kind, node, start, now_ms())

    def _expect_leader(self, kind: str, *, other_than: str) -> None:
        try:
            self.wait_leader(other_than=other_than)
        except AssertionError as exc:
            self.incidents.append(f"{kind}: no other replica took over: {exc}")

    def _busy_worker(self) -> str | None:
        """A worker slot whose work horse is running a job now (waits up to 5 s).

        "Running" means RQ has marked the job started: a worker killed between
        dequeuing a job and starting it is a different fault, with its own
        deterministic test (``tests/integration/test_orphaned_run.py``)."""

        def probe() -> str | None:
            for slot, name in self.worker_names.items():
                with contextlib.suppress(redis.exceptions.RedisError):
                    job = text(self.conn.hget(rqkeys.worker(name), "current_job"))
                    if job and text(self.conn.hget(rqkeys.job(job), "status")) == "started":
                        return slot
            return None

        with contextlib.suppress(AssertionError):
            return wait_for(probe, timeout=5, interval=0.02, what="a worker running a job")
        return None


def drive(rig: Rig, duration_s: float, gap_s: float, kinds: Sequence[str] = FAULTS) -> None:
    """Inject ``kinds`` for ``duration_s``: rounds in which each kind happens once, in
    an order drawn from the rig's seed, with 0.5-1.5 x ``gap_s`` of quiet before each
    (at least one round, so every kind happens at least once). Random moments, yet a
    run replays from its seed."""
    deadline = time.monotonic() + duration_s
    done = 0
    while done < len(kinds) or time.monotonic() < deadline:
        order = list(kinds)
        rig.rng.shuffle(order)
        for kind in order:
            if done >= len(kinds) and time.monotonic() >= deadline:
                return
            time.sleep(gap_s * rig.rng.uniform(0.5, 1.5))  # quiet before a fault: the plan, not a wait
            rig.inject(kind)
            rig.heal()
            done += 1


def fleet_toml(schedules: Sequence[Schedule]) -> str:
    """A schedule file (``rqbeat apply``) for ``schedules``; the values a chaos fleet
    uses (text, numbers, booleans, tables of them) in TOML, whose strings and numbers
    read like JSON's."""
    lines: list[str] = []
    for schedule in schedules:
        lines.append(f"[schedules.{schedule.id}]")
        for key, value in schedule.to_dict().items():
            if key not in ("id", "owner"):
                lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)
