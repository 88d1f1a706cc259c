"""TLS: a real redis-server with a TLS port that requires client certificates, a
real ``rqbeat run`` and ``rqbeat worker`` reaching it over ``rediss://`` with
``RQBEAT_TLS_*``, and the one-line error of a CLI command given the wrong CA."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from devtools.cluster import Cluster, runs_per_key
from devtools.localredis import free_port
from devtools.processes import REPO, Process, RedisServer, wait_for
from scheduler import Client, Schedule
from scheduler.records import text
from tests.tlscerts import Pki, make_pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # TLS servers and certificates


@dataclass
class TlsRedis:
    server: RedisServer  # its plain port stays open for the test's own checks
    tls_port: int
    pki: Pki

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"

    def env(self, ca: Path | None = None) -> dict[str, str]:
        return {
            "RQBEAT_TLS_CA_CERT": str(ca or self.pki.ca),
            "RQBEAT_TLS_CERT": str(self.pki.client_cert),
            "RQBEAT_TLS_KEY": str(self.pki.client_key),
        }


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    server = RedisServer(
        tmp_path / "redis",
        extra=[
            "--tls-port", str(port), "--tls-cert-file", str(pki.server_cert),
            "--tls-key-file", str(pki.server_key), "--tls-ca-cert-file", str(pki.ca),
            "--tls-auth-clients", "yes",
        ],
    )  # fmt: skip
    try:
        server.start()
    except AssertionError:
        log = (tmp_path / "redis" / "server.log").read_text(errors="replace")
        server.stop()
        pytest.skip(f"this redis-server does not start with TLS: {log.strip().splitlines()[-1:]}")
    yield TlsRedis(server, port, pki)
    server.stop()


def rqbeat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_dispatch_and_ack_over_tls(tls_redis: TlsRedis, tmp_path: Path, processes: list[Process]) -> None:
    cluster = Cluster(tls_redis.url, tmp_path, processes, env=tls_redis.env())
    conn: Redis = tls_redis.server.client()
    cluster.replica("a")
    cluster.worker("w0")
    wait_for(lambda: conn.scard("rq:workers") >= 1, timeout=20, what="the worker over TLS")
    cluster.wait_leader(conn)
    Client(conn).upsert(Schedule(id="tls", target="tests.jobs.record", every_ms=1000))
    wait_for(lambda: len(runs_per_key(conn)) >= 2, timeout=20, what="2 runs over TLS")
    wait_for(
        lambda: text(conn.hget("rqbeat:schedule:tls", "last_result")) == "succeeded",
        timeout=20,
        what="an acknowledged run",
    )
    ok = rqbeat(tls_redis.env(), "--redis-url", tls_redis.url, "status", "--json")
    assert ok.returncode == 0, ok.stderr
    assert '"leader": "a"' in ok.stdout
    conn.close()


def test_wrong_ca_is_one_clear_line(tls_redis: TlsRedis) -> None:
    env = tls_redis.env(ca=tls_redis.pki.other_ca)
    result = rqbeat(env, "--redis-url", tls_redis.url, "status")
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: cannot reach Redis at {tls_redis.url}"), lines
    assert "certificate verify failed" in lines[0], lines


def test_tls_files_without_rediss_are_refused(tls_redis: TlsRedis) -> None:
    plain = f"redis://127.0.0.1:{tls_redis.server.port}/0"
    result = rqbeat(tls_redis.env(), "--redis-url", plain, "add", "x", "tests.jobs.record", "--every", "1s")
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        f"Error: --tls-ca-cert: TLS files need a rediss:// URL (got {str(tls_redis.pki.ca)!r})"
    )
    conn = tls_redis.server.client()
    assert conn.exists("rqbeat:schedule:x") == 0  # nothing written
    conn.close()
