"""Stalls reach the webhook: the leader raises an alert when a health finding appears
and a recovery when it clears (a real replica, real workers, a receiver on 127.0.0.1)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from devtools.cluster import Cluster
from devtools.processes import Process, wait_for
from scheduler.engine.webhook import SIGNATURE_HEADER, verify
from scheduler.model import Schedule
from scheduler.store import Client
from tests.hookserver import HookServer, hook_server

pytestmark = pytest.mark.integration

SECRET = "health-hook-secret"


def events(hooks: HookServer) -> list[dict[str, Any]]:
    """Every signed event the receiver got (an unsigned one fails the test)."""
    out = []
    for request in hooks.received("/hook"):
        assert verify(SECRET.encode(), request.headers[SIGNATURE_HEADER], request.body, time.time())
        out.append(json.loads(request.body))
    return out


def has(hooks: HookServer, kind: str, *, recovered: bool, **about: str) -> bool:
    return any(
        e["kind"] == kind and e["recovered"] is recovered and all(e[k] == v for k, v in about.items())
        for e in events(hooks)
    )


def test_a_queue_nobody_serves_raises_alerts_and_their_recovery(
    redis_url: str, conn: Redis, tmp_path: Path, processes: list[Process]
) -> None:
    with hook_server() as hooks:
        cluster = Cluster(redis_url, tmp_path, processes, env={"TEST_HOOK_SECRET": SECRET})
        cluster.replica(
            "r1",
            extra=[
                "--webhook-url", f"{hooks.url}/hook", "--webhook-secret-env", "TEST_HOOK_SECRET",
                "--alert-interval", "1s", "--health-alert-interval", "1s",
            ],
        )  # fmt: skip
        cluster.wait_leader(conn)
        Client(conn).upsert(
            Schedule(
                id="typo", target="tests.jobs.record", every_ms=1000, queue="reprots", max_queued_ms=2000
            )
        )

        wait_for(lambda: has(hooks, "no_worker", recovered=False, queue="reprots"), 30, what="no_worker")
        wait_for(lambda: has(hooks, "queued_too_long", recovered=False, schedule="typo"), 30, what="late run")
        assert not has(hooks, "no_worker", recovered=True, queue="reprots")

        cluster.worker("w-reprots", "reprots")  # the fix
        wait_for(lambda: has(hooks, "no_worker", recovered=True, queue="reprots"), 30, what="its recovery")
        wait_for(lambda: has(hooks, "queued_too_long", recovered=True, schedule="typo"), 30, what="recovery")
        raised = [e for e in events(hooks) if e["kind"] == "no_worker" and not e["recovered"]]
        assert len(raised) == 1, raised  # raised once while it held, not at every look
