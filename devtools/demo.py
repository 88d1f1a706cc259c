"""``make run``: a local demo of rqbeat.

Starts a private Redis (unless ``RQBEAT_REDIS_URL`` is set), two scheduler replicas,
one worker and a demo schedule that fires every 5 seconds, and interleaves their
logs. Ctrl-C stops everything; the leader releases its lease on the way out.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from redis import Redis

from devtools.localredis import free_port, server_binary
from scheduler.model import Schedule
from scheduler.store import Client


@contextlib.contextmanager
def _private_redis() -> Iterator[str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="rqbeat-demo-")
    proc = subprocess.Popen(
        [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(200):
            with contextlib.suppress(Exception):
                if Redis.from_url(url).ping():
                    break
            time.sleep(0.025)
        print(f"demo: started a private Redis at {url}", flush=True)
        yield url
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _pump(name: str, proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"{name:>10} | {line}", end="", flush=True)


def _spawn(name: str, args: list[str], url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "RQBEAT_REDIS_URL": url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    threading.Thread(target=_pump, args=(name, proc), daemon=True).start()
    return proc


def inspect_command(url: str) -> str:
    """``.venv/bin/rqbeat ls --redis-url URL``: the rqbeat next to this Python, so the
    line works as printed without activating the virtualenv."""
    rqbeat = Path(sys.executable).parent / "rqbeat"
    shown = os.path.relpath(rqbeat) if rqbeat.is_relative_to(Path.cwd()) else str(rqbeat)
    return f"{shlex.quote(shown)} ls --redis-url {shlex.quote(url)}"


def main() -> None:
    given = os.environ.get("RQBEAT_REDIS_URL")
    with contextlib.nullcontext(given) if given else _private_redis() as url:
        client = Client(Redis.from_url(url))
        client.upsert(
            Schedule(id="demo-hello", target="workers.demo.hello", every_ms=5_000, kwargs={"name": "rqbeat"})
        )
        print(f"demo: schedule demo-hello fires every 5s; inspect with: {inspect_command(url)}", flush=True)
        procs = [
            _spawn("replica-1", ["run", "--node", "replica-1"], url),
            _spawn("replica-2", ["run", "--node", "replica-2"], url),
            _spawn("worker", ["worker", "default"], url),
        ]
        try:
            while all(p.poll() is None for p in procs):
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("\ndemo: stopping", flush=True)
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(15)
            print("demo: stopped", flush=True)


if __name__ == "__main__":
    main()
