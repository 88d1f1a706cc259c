"""Start real rqbeat replicas and RQ workers against the private test Redis.

Every process is a subprocess with its own session (so ``kill -9`` of a worker can
take its work horse too) and its output in a log file under the test's tmp_path.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from redis import Redis

from devtools.processes import REPO, Process, wait_for
from devtools.skewclock import skewed_env
from scheduler.keys import Keys
from scheduler.records import text

_counter = itertools.count()


class Cluster:
    """Replicas and workers for one test; ``close()`` stops them all."""

    def __init__(
        self,
        redis_url: str,
        tmp_path: Path,
        processes: list[Process],
        namespace: str = "rqbeat",
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = env  # RQBEAT_* settings every process gets (Sentinel, TLS)
        self.redis_url = redis_url
        self.tmp_path = tmp_path
        self.processes = processes
        self.namespace = namespace
        self.keys = Keys(namespace)

    def _start(self, name: str, args: list[str], clock_offset_s: float | None = None) -> Process:
        log = self.tmp_path / f"{name}-{next(_counter)}.log"
        env = dict(self.env or {})
        if clock_offset_s is not None:  # a machine whose clock is off (devtools/skewclock)
            env.update(skewed_env(clock_offset_s, f"{REPO}:{REPO / 'tests'}"))
        proc = Process(args, log, env=env)
        self.processes.append(proc)
        return proc

    def replica(
        self,
        node: str,
        *,
        lease: str = "2s",
        log_level: str = "info",
        extra: Sequence[str] = (),
        redis_url: str | None = None,
        clock_offset_s: float | None = None,
    ) -> Process:
        """``rqbeat run`` as a subprocess; ``extra``: more ``run`` options; ``redis_url``
        overrides the cluster's (a proxy); ``clock_offset_s``: its wall clock that far
        off (its decisions use Redis time, so nothing may change)."""
        return self._start(
            node,
            [
                sys.executable,
                "-m",
                "scheduler",
                "--redis-url",
                redis_url or self.redis_url,
                "--namespace",
                self.namespace,
                "run",
                "--node",
                node,
                "--lease",
                lease,
                "--log-level",
                log_level,
                *extra,
            ],
            clock_offset_s,
        )

    def worker(
        self,
        name: str,
        *queues: str,
        monitoring_interval: int = 1,
        grace: int = 2,
        extra: Sequence[str] = (),
        clock_offset_s: float | None = None,
    ) -> Process:
        """``rqbeat worker`` (workers.Worker, atomic ack) as a subprocess; ``extra``: more
        ``worker`` options (a repeated option overrides the default given here);
        ``clock_offset_s``: its wall clock that far off (negative: behind)."""
        return self._start(
            name,
            [
                sys.executable,
                "-m",
                "scheduler",
                "--redis-url",
                self.redis_url,
                "worker",
                *(queues or ("default",)),
                "--name",
                name,
                "--job-monitoring-interval",
                str(monitoring_interval),
                "--heartbeat-grace",
                str(grace),
                "--log-level",
                "warning",
                *extra,
            ],
            clock_offset_s,
        )

    def plain_rq_worker(
        self,
        name: str,
        *queues: str,
        clock_offset_s: float | None = None,
        serializer: str | None = "rq.serializers.JSONSerializer",
    ) -> Process:
        """A stock ``rq worker -S json``: acks come from the leader's watchdog.
        ``serializer=None``: RQ's default (pickle), which cannot read rqbeat's jobs."""
        return self._start(
            name,
            [
                sys.executable,
                "-m",
                "rq.cli",
                "worker",
                "--url",
                self.redis_url,
                *(("-S", serializer) if serializer else ()),
                "--name",
                name,
                "--logging_level",
                "WARNING",
                *(queues or ("default",)),
            ],
            clock_offset_s,
        )

    def leader(self, conn: Redis) -> str | None:
        """The node named in the lease, or None."""
        token = text(conn.get(self.keys.leader))
        return token.partition(":")[2] if token else None

    def wait_leader(self, conn: Redis, timeout: float = 30.0, other_than: str | None = None) -> str:
        """The node holding the lease, waiting for one (a replica starting on a busy
        machine can take seconds to import and connect: the deadline is generous)."""

        def probe() -> str | None:
            node = self.leader(conn)
            return node if node and node != other_than else None

        return wait_for(probe, timeout, what="a leader")


def kill_group(proc: Process, sig: int = signal.SIGKILL) -> None:
    """Signal a process and everything in its session (an RQ worker and its horse)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    if sig == signal.SIGKILL:
        proc.proc.wait(10)


def runs_per_key(conn: Redis, tag: str = "runs") -> dict[str, int]:
    """How many times each fire ran (the jobs in tests/jobs.py record this)."""
    return {str(text(k)): int(v) for k, v in conn.hgetall(f"test:{tag}").items()}


def kill_session(proc: Process) -> list[int]:
    """``kill -9`` every process in ``proc``'s session: an RQ worker *and* its work horse.

    :func:`kill_group` is not enough for that: RQ's horse calls ``os.setpgrp()`` after
    the fork, so it leaves the worker's process group (it stays in the session). All of
    them are stopped first, so the worker cannot see its horse die and record a failure.
    Returns the pids killed (Linux: reads ``/proc``).
    """
    pids = [proc.pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != proc.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(entry.name)) == proc.pid:
                    pids.append(int(entry.name))
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    proc.proc.wait(10)
    return pids
