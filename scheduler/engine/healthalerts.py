"""Health findings as alerts: the leader looks at :func:`scheduler.health.read_health`
every ``--health-alert-interval`` (60 s) and submits an event when a finding appears and another when it
clears, to the same sender as the scripts' events (:mod:`scheduler.engine.alerts`).

What was raised is remembered by this process only: a new leader starts with nothing
raised, so a finding still present after a failover is raised once more (the
receiver's dedup by event id does not apply; the rate limit does). Broken schedules
are left out (the MARK_BROKEN script raises and the next success clears them), and so
is "no leader" (a leader cannot see its own absence: ``rqbeat check`` reports it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from redis import Redis

from scheduler.clock import Clock
from scheduler.engine.alerts import AlertEvent
from scheduler.health import Finding, FindingKind, read_health
from scheduler.keys import Keys
from scheduler.protocol import AlertKind

#: The findings an alert is raised for, and the alert's kind.
ALERTED: dict[FindingKind, AlertKind] = {
    FindingKind.STALE: AlertKind.STALE,
    FindingKind.QUEUED_TOO_LONG: AlertKind.QUEUED_TOO_LONG,
    FindingKind.NO_WORKER: AlertKind.NO_WORKER,
    FindingKind.WRONG_SERIALIZER: AlertKind.WRONG_SERIALIZER,
}

#: (kind, schedule or None, queue or None): one raised finding.
Subject = tuple[FindingKind, str | None, str | None]


def subject(finding: Finding) -> Subject:
    return finding.kind, finding.schedule_id, finding.queue


def changes(raised: dict[Subject, Finding], found: list[Finding]) -> tuple[list[Finding], list[Finding]]:
    """Pure: (findings to raise, raised findings now cleared) between two looks."""
    now = {subject(f): f for f in found if f.kind in ALERTED}
    return [f for s, f in now.items() if s not in raised], [f for s, f in raised.items() if s not in now]


@dataclass
class HealthAlerts:
    """Called from the alerter's thread while its replica leads; cheap when not due.
    ``every_s``: how often it reads (each read is 2 pipelined round trips of about 8
    commands, O(log n + k), the cost of ``rqbeat check --health-only``)."""

    conn: Redis
    keys: Keys
    submit: Callable[[AlertEvent], bool]
    clock: Clock
    every_s: float
    raised: dict[Subject, Finding] = field(default_factory=dict)
    _next_s: float = 0.0

    @property
    def looking(self) -> bool:
        """True once this reign has looked (looks are then due-based)."""
        return self._next_s > 0.0

    def look(self) -> None:
        """Raise and clear alerts for what changed since the last look, if one is due."""
        if self.clock.monotonic() < self._next_s:
            return
        self._next_s = self.clock.monotonic() + self.every_s
        health = read_health(self.conn, self.keys)
        new, cleared = changes(self.raised, health.findings)
        for finding, recovered in [*((f, False) for f in new), *((f, True) for f in cleared)]:
            self.submit(
                AlertEvent(
                    kind=ALERTED[finding.kind],
                    schedule_id=finding.schedule_id,
                    queue=finding.queue,
                    detail=finding.detail,
                    recovered=recovered,
                    at_ms=health.now_ms,
                )
            )
            if recovered:
                del self.raised[subject(finding)]
            else:
                self.raised[subject(finding)] = finding

    def forget(self) -> None:
        """Stepped down: the next leader raises what it finds itself."""
        self.raised.clear()
        self._next_s = 0.0
