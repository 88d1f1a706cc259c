"""Which findings become alerts, and when: raised once, cleared once, forgotten on
stepping down (pure, with a fake reader and clock)."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.engine import healthalerts
from scheduler.engine.alerts import AlertEvent
from scheduler.engine.healthalerts import HealthAlerts, changes
from scheduler.health import Finding, FindingKind, Health
from scheduler.keys import Keys
from scheduler.protocol import AlertKind
from tests.fakeclock import FakeClock

STALE = Finding(FindingKind.STALE, "no success for 10m", schedule_id="nightly")
NO_WORKER = Finding(FindingKind.NO_WORKER, "no live worker listens on it", queue="reprots")
BROKEN = Finding(FindingKind.BROKEN, "not JSON", schedule_id="wrecked")


def test_changes_raise_new_findings_and_clear_gone_ones() -> None:
    raised = {healthalerts.subject(STALE): STALE}
    new, cleared = changes(raised, [NO_WORKER, BROKEN])
    assert (new, cleared) == ([NO_WORKER], [STALE])  # broken: the scripts raise it, not this


def test_look_raises_once_clears_once_and_waits_between_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    found: list[list[Finding]] = [[STALE, NO_WORKER], [STALE, NO_WORKER], [NO_WORKER]]
    reads: list[int] = []

    def read(conn: Any, keys: Keys) -> Health:
        reads.append(1)
        return Health(now_ms=1_000 * len(reads), findings=found[len(reads) - 1], counts={})

    monkeypatch.setattr(healthalerts, "read_health", read)
    sent: list[AlertEvent] = []

    def submit(event: AlertEvent) -> bool:
        sent.append(event)
        return True

    clock = FakeClock()
    watch = HealthAlerts(None, Keys(), submit, clock, every_s=30.0)  # type: ignore[arg-type]  # reader faked

    watch.look()
    watch.look()  # not due yet: no read
    assert len(reads) == 1
    assert [(e.kind, e.subject, e.recovered) for e in sent] == [
        (AlertKind.STALE, "nightly", False),
        (AlertKind.NO_WORKER, "queue:reprots", False),
    ]
    for _ in range(2):
        clock.sleep(30.0)
        watch.look()
    assert [(e.kind, e.subject, e.recovered) for e in sent[2:]] == [(AlertKind.STALE, "nightly", True)]

    watch.forget()  # stepped down: a new term raises what it finds again
    assert watch.raised == {}
