"""Private Redis servers and real rqbeat/RQ processes for the benchmarks.

Every benchmark starts its own ``redis-server`` (``devtools.processes.RedisServer``,
the same class the tests use) on a free loopback port in a temporary directory and
never touches a Redis it did not start. Processes are real ``python -m scheduler run`` replicas and
workers, each in its own session, stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from redis import Redis

from devtools.processes import RedisServer
from scheduler.records import text
from scheduler.store import HistoryEntry

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_for(
    probe: Callable[[], T | None], timeout: float, interval: float = 0.01, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns a truthy value; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def sleep_until(epoch_s: float) -> None:
    """Sleep until the wall clock (same clock as the local Redis's TIME) reaches it."""
    while True:
        left = epoch_s - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5) if left > 0.002 else 0)


class Process:
    """A subprocess in its own session with its output in a log file."""

    def __init__(self, args: Sequence[str], log: Path, cwd: Path = REPO, pythonpath: Path = REPO) -> None:
        self.args = list(args)
        self.log_path = log
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from ``/proc/<pid>/stat`` (clock-tick resolution)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def cpu_seconds_precise(pid: int) -> float:
    """On-CPU time of all threads from ``/proc/<pid>/task/*/schedstat`` (ns resolution)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


class Stack:
    """One benchmark's processes (and server), stopped in reverse order on exit."""

    def __init__(self, workdir: Path, redis_url: str, namespace: str = "rqbeat") -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.namespace = namespace
        self.procs: list[Process] = []
        self._n = 0

    def start(self, name: str, args: Sequence[str], cwd: Path = REPO, pythonpath: Path = REPO) -> Process:
        """``args`` as a process run in ``cwd`` (an app directory: ``rqbeat worker`` imports
        the jobs from there)."""
        self._n += 1
        proc = Process(args, self.workdir / f"{self._n:02d}-{name}.log", cwd, pythonpath)
        self.procs.append(proc)
        return proc

    def replica(
        self,
        node: str,
        *,
        lease: str = "15s",
        log_level: str = "info",
        python: Sequence[str] = (),
        tree: Path = REPO,
    ) -> Process:
        """``rqbeat run`` (``python -m scheduler run``); ``python`` replaces the interpreter
        command (a profiler: ``py-spy record -- python``, ``python -m cProfile -o F``);
        ``tree`` is the source tree it runs from (another commit's, for a before/after)."""
        return self.start(
            node,
            [
                *(python or [sys.executable]), "-m", "scheduler", "--redis-url", self.redis_url,
                "--namespace", self.namespace, "run", "--node", node, "--lease", lease,
                "--log-level", log_level,
            ],
            cwd=tree,
            pythonpath=tree,
        )  # fmt: skip

    def worker(self, name: str, queue: str = "default") -> Process:
        """``rqbeat worker`` (workers.Worker: the ack joins RQ's success transaction)."""
        return self.start(
            name,
            [
                sys.executable, "-m", "scheduler", "--redis-url", self.redis_url, "worker", queue,
                "--name", name, "--log-level", "warning",
            ],
        )  # fmt: skip

    def plain_rq_worker(
        self, name: str, queue: str = "default", serializer: str = "rq.serializers.JSONSerializer"
    ) -> Process:
        """A stock ``rq worker -S rq.serializers.JSONSerializer``: the watchdog acks.
        (``serializer="pickle"``: RQ's default, what RQ's cron enqueues with.)"""
        return self.start(
            name,
            [
                sys.executable, "-m", "rq.cli", "worker", "--url", self.redis_url,
                "-S", serializer, "--name", name, "--logging_level", "WARNING", queue,
            ],
        )  # fmt: skip

    def rq_cron(self, name: str, config: Path) -> Process:
        """RQ's own cron scheduler, ``rq cron CONFIG`` (``rq.cron``, RQ 2.1+)."""
        return self.start(
            name,
            [
                sys.executable, "-m", "rq.cli", "cron", "--url", self.redis_url, "--logging-level", "warning",
                str(config),
            ],
        )  # fmt: skip

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


@contextlib.contextmanager
def stack(workdir: Path, server: RedisServer) -> Iterator[Stack]:
    """Processes against ``server``; all stopped when the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    st = Stack(workdir, server.url)
    try:
        yield st
    finally:
        st.close()


def leader_node(conn: Redis, namespace: str = "rqbeat") -> str | None:
    token = text(conn.get(f"{namespace}:leader"))
    return token.partition(":")[2] if token else None


def history(conn: Redis, schedule_id: str, namespace: str = "rqbeat") -> list[HistoryEntry]:
    """Every entry of a schedule's history stream, oldest first, decoded; ``at_ms`` is
    the entry ID's time (when Redis wrote it, 1 ms resolution)."""
    out = []
    for entry_id, raw in conn.xrange(f"{namespace}:history:{schedule_id}") or []:
        eid = str(text(entry_id))
        fields = {str(text(k)): str(text(v)) for k, v in (raw or {}).items()}
        out.append(HistoryEntry(eid, int(eid.split("-", 1)[0]), fields.pop("event", "?"), fields))
    return out


def wait_role(conn: Redis, node: str, role: str, timeout: float = 30, namespace: str = "rqbeat") -> None:
    """Wait until replica ``node`` has reported ``role`` (leader/standby) in its heartbeat."""
    wait_for(
        lambda: conn.hget(f"{namespace}:node:{node}", "role") == role.encode(),
        timeout,
        what=f"replica {node} to report {role}",
    )


class Monitor(threading.Thread):
    """Counts the commands clients send (``MONITOR``), by client port; commands run
    inside Lua scripts (``[0 lua]``) are not client commands and are not counted."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"MONITOR\r\n")
        self.events: list[tuple[float, int, str]] = []  # (redis time, client port, command)
        self._closing = threading.Event()

    def run(self) -> None:
        buf = b""
        self.sock.settimeout(0.2)
        while not self._closing.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\r\n")
            for line in lines:
                self._parse(line.decode(errors="replace"))

    def _parse(self, line: str) -> None:
        # +1700000000.123456 [0 127.0.0.1:53412] "zrange" "rqbeat:due" ...
        if not line.startswith("+") or " [" not in line:
            return
        stamp, _, rest = line[1:].partition(" [")
        client, _, command = rest.partition("] ")
        addr = client.split(" ", 1)[-1]
        if addr == "lua" or ":" not in addr:
            return
        self.events.append(
            (float(stamp), int(addr.rsplit(":", 1)[1]), command.split(" ", 1)[0].strip('"').lower())
        )

    def close(self) -> None:
        self._closing.set()
        self.join(2)
        self.sock.close()


def client_ports(pid: int) -> set[int]:
    """Local TCP ports of a process's sockets (to attribute MONITOR lines to it)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports
