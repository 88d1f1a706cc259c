"""Alerts without Prometheus: events to webhooks, sent from the leader.

Where events come from::

    ACK (gave up), RETRY (pause_on_failure), MARK_BROKEN   -> RPUSH <ns>:alerts
    ACK (the first success after one of those)             -> RPUSH <ns>:alerts
    a health check in this process                         -> Alerter.submit(event)

The scripts push their event in the same step as the transition, whoever runs it
(a worker's ack, the leader's watchdog or dispatch), so no event depends on which
process saw the failure, and none is lost when the leader dies before sending it:
the next leader drains the list. :class:`Alerter` is one background thread on each
replica; it drains the list only while its replica leads, rate-limits per schedule
and kind, and delivers each event to the namespace's webhook and the schedule's own
(:mod:`scheduler.engine.webhook`), recording ``alert_sent``/``alert_failed`` in the
schedule's history. Dispatch never waits for it: :meth:`Alerter.submit` only puts
the event on a bounded queue, and drops (and counts) it when the queue is full.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import RedisError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from scheduler import scripts, stored
from scheduler.clock import Clock, SystemClock, iso, parse_iso_ms
from scheduler.engine.webhook import RetryPolicy, Sender, WebhookRejected, encode
from scheduler.errors import CorruptDefinition
from scheduler.keys import HISTORY_MAXLEN, Keys
from scheduler.logs import worth_logging
from scheduler.protocol import AlertKind
from scheduler.records import decode_definition

if TYPE_CHECKING:
    from scheduler.engine.healthalerts import HealthAlerts
    from scheduler.engine.metrics import Metrics

log = logging.getLogger(__name__)

#: How often an idle alerter looks at ``<ns>:alerts`` although no publish woke it
#: (only while its replica leads): the safety net for a publish missed while the
#: replica's subscription was down; one LPOP a minute at the default.
POLL_S = 60.0
#: Events taken from ``<ns>:alerts`` per look.
DRAIN_BATCH = 100


class Dropped:
    """Why an event was not sent (the ``reason`` label of the dropped counter)."""

    QUEUE_FULL = "queue_full"
    RATE_LIMITED = "rate_limited"
    NO_WEBHOOK = "no_webhook"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, kw_only=True)
class AlertEvent:
    """Something a person should hear about: ``kind`` raised, or cleared (``recovered``).

    ``schedule_id`` is None for a finding about a queue (``queue`` names it)."""

    kind: AlertKind
    schedule_id: str | None
    fire_ms: int | None = None
    detail: str = ""
    recovered: bool = False
    job_id: str | None = None
    queue: str | None = None
    at_ms: int  # when it happened, Redis time

    @property
    def subject(self) -> str:
        """What it is about: the schedule, or the queue."""
        return self.schedule_id or f"queue:{self.queue or '?'}"

    @property
    def event_id(self) -> str:
        """The same on every attempt of a delivery: receivers drop duplicates by it."""
        state = "recovered" if self.recovered else "raised"
        return f"{self.subject}:{self.kind}:{state}:{self.at_ms}"

    def body(self, namespace: str) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {
            "id": self.event_id,
            "namespace": namespace,
            "kind": str(self.kind),
            "recovered": self.recovered,
            "schedule": self.schedule_id,
            "queue": self.queue,
            "fire_at": iso(self.fire_ms) if self.fire_ms is not None else None,
            "job_id": self.job_id,
            "detail": self.detail,
            "timestamp": iso(self.at_ms),
        }

    @classmethod
    def from_script(cls, raw: bytes | str) -> AlertEvent:
        """From an entry the scripts push (JSON); raises ValueError when damaged."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"not an object: {raw!r}")
        fire, job = data.get("fire_at") or "", data.get("job_id") or ""
        return cls(
            kind=AlertKind(data["kind"]),
            schedule_id=str(data["schedule"]),
            fire_ms=parse_iso_ms(fire) if fire else None,
            detail=str(data.get("detail") or ""),
            recovered=data.get("recovered") is True,
            job_id=str(job) or None,
            at_ms=parse_iso_ms(str(data["at"])),
        )


class RateLimiter:
    """At most one event per key per ``window_s`` (monotonic time of ``clock``)."""

    def __init__(self, window_s: float, clock: Clock, *, max_keys: int = 100_000) -> None:
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._last: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> bool:
        now = self.clock.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window_s:
                return False
            if len(self._last) >= self.max_keys:  # forget the keys whose window is over
                self._last = {k: t for k, t in self._last.items() if now - t < self.window_s}
            self._last[key] = now
            return True


@dataclass(frozen=True, kw_only=True)
class AlertConfig:
    """The namespace's alert settings (``rqbeat run --webhook-url ...``)."""

    url: str | None = None
    secret: bytes | None = field(default=None, repr=False)  # signs every event; None: unsigned
    rate_window_s: float = 60.0  # one event per schedule, kind and state per window
    queue_size: int = 1_000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll_s: float = POLL_S  # the leader takes the scripts' events when woken, and at least this often
    health_every_s: float = 60.0  # how often it looks at the health findings (--health-alert-interval)


class Alerter:
    """The sender: a bounded queue and one daemon thread. ``start()``/``stop()``."""

    def __init__(
        self,
        conn: Redis,
        keys: Keys,
        config: AlertConfig,
        *,
        is_leader: Callable[[], bool],
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        sender: Sender | None = None,
    ) -> None:
        self.conn, self.keys, self.config = conn, keys, config
        self.is_leader = is_leader
        self.clock = clock or SystemClock()
        self.metrics = metrics
        self.sender = sender or Sender(
            secret=config.secret, policy=config.retry, wall_s=time.time, sleep=self.clock.sleep
        )
        self.limiter = RateLimiter(config.rate_window_s, self.clock)
        # None in the queue: a request to drain <ns>:alerts now (wake()).
        self._queue: queue.Queue[AlertEvent | None] = queue.Queue(maxsize=config.queue_size)
        self._scripts = scripts.Scripts(conn)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: health findings as alerts (:mod:`scheduler.engine.healthalerts`); set by the service
        self.health: HealthAlerts | None = None
        # Safe to retry: a step that failed took nothing from Redis it would lose (LPOP
        # of a batch that cannot be read back is the one exception: at most one batch of
        # events, counted as dropped), and delivery itself retries on its own.
        self._retrying = Retrying(
            retry=retry_if_exception_type((RedisError, OSError)),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._pause,
            before_sleep=_log_redis_error,
            retry_error_callback=lambda _state: None,
        )

    def submit(self, event: AlertEvent) -> bool:
        """Queue ``event`` for delivery without waiting; False when it was dropped
        (rate-limited, or the queue is full), and counted."""
        if not self.limiter.allow((event.subject, event.kind, event.recovered)):
            self._dropped(event, Dropped.RATE_LIMITED)
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._dropped(event, Dropped.QUEUE_FULL)
            return False
        return True

    def wake(self) -> None:
        """The scripts pushed an event (their publish reached the service's
        subscription), or one may have been missed: drain the list now. Never blocks."""
        with contextlib.suppress(queue.Full):  # a full queue is drained first anyway
            self._queue.put_nowait(None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rqbeat-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.wake()  # cut the wait short
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)  # stop() cuts a pause short

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._retrying(self.step, min(self.config.poll_s, self.config.health_every_s))

    def step(self, wait_s: float) -> None:
        """Deliver the next queued event; on a wake-up, or when none comes within
        ``wait_s``, take the scripts' events from ``<ns>:alerts`` (while this replica
        leads) and look at the health findings if that is due."""
        timed_out = False
        try:
            event = self._queue.get(timeout=wait_s)
        except queue.Empty:
            event, timed_out = None, True
        if event is None:
            if self.is_leader():
                if self.drain() == DRAIN_BATCH:
                    self.wake()  # more may be waiting
                # A reign's first look waits for a quiet moment (not the wake-up at
                # acquisition, when the new leader's first dispatch is due); then due-based.
                if self.health is not None and (timed_out or self.health.looking):
                    self.health.look()
            elif self.health is not None:
                self.health.forget()
            return
        self.deliver(event)

    def drain(self) -> int:
        """Move up to :data:`DRAIN_BATCH` events from ``<ns>:alerts`` to the queue."""
        raw: list[bytes] | None = self.conn.lpop(self.keys.alerts, DRAIN_BATCH)  # type: ignore[assignment]
        for entry in raw or []:
            try:
                event = AlertEvent.from_script(entry)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("alerts: unreadable event %r (%s); dropped", entry[:200], exc)
                self._count_dropped("?", Dropped.UNREADABLE)
                continue
            self.submit(event)
        return len(raw or [])

    def deliver(self, event: AlertEvent) -> None:
        """Send ``event`` to each of its webhooks, and record how it went."""
        urls = self._targets(event)
        if not urls:
            self._dropped(event, Dropped.NO_WEBHOOK)
            return
        body = encode(event.body(self.keys.namespace))
        for url in urls:
            try:
                done = self.sender.deliver(url, body)
            except WebhookRejected as exc:
                log.error(
                    "alert failed schedule=%s kind=%s recovered=%s fire=%s url=%s attempts=%d error=%s",
                    event.subject, event.kind, event.recovered, _fire(event), _host(url), exc.attempts,
                    exc.reason,
                )  # fmt: skip
                self._record(event, "alert_failed", url, exc.attempts, error=exc.reason)
                continue
            log.info(
                "alert sent schedule=%s kind=%s recovered=%s fire=%s url=%s status=%d attempts=%d",
                event.subject, event.kind, event.recovered, _fire(event), _host(url), done.status,
                done.attempts,
            )  # fmt: skip
            self._record(event, "alert_sent", url, done.attempts, status=done.status)

    def _targets(self, event: AlertEvent) -> list[str]:
        """The namespace's webhook and the schedule's own (read now: an edit applies)."""
        urls = [self.config.url] if self.config.url else []
        if event.schedule_id is not None:
            definition = stored.read_text(self.conn, self.keys.schedule(event.schedule_id))
            try:
                own = decode_definition(event.schedule_id, definition).webhook
            except CorruptDefinition:
                own = None  # a broken schedule's alert still goes to the namespace's webhook
            if own and own not in urls:
                urls.append(own)
        return urls

    def _record(self, event: AlertEvent, what: str, url: str, attempts: int, **extra: Any) -> None:
        if self.metrics is not None:
            self.metrics.alert_delivered(event.kind, what == "alert_sent")
        if event.schedule_id is None:
            return
        sid = event.schedule_id
        fields: list[Any] = ["event", what, "kind", event.kind, "recovered", int(event.recovered)]
        if event.fire_ms is not None:
            fields += ["fire_at", iso(event.fire_ms)]
        fields += ["url", _host(url), "attempts", attempts, *(x for kv in extra.items() for x in kv)]
        scripts.run(
            self._scripts.alert_record,
            [self.keys.schedule(sid), self.keys.history(sid)],
            [HISTORY_MAXLEN, *fields],
        )

    def _dropped(self, event: AlertEvent, reason: str) -> None:
        log.info(
            "alert dropped schedule=%s kind=%s recovered=%s fire=%s reason=%s",
            event.subject, event.kind, event.recovered, _fire(event), reason,
        )  # fmt: skip
        self._count_dropped(event.kind, reason)

    def _count_dropped(self, kind: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_dropped(reason)


def _log_redis_error(state: RetryCallState) -> None:
    failures = state.attempt_number
    if worth_logging(failures):  # 1st, 2nd, 4th, 8th...: not one line per retry
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning("alerts: redis error failures=%d error=%s (retrying)", failures, exc)


def _fire(event: AlertEvent) -> str:
    return iso(event.fire_ms) if event.fire_ms is not None else "-"


def _host(url: str) -> str:
    """Where an event went, without the path or query (which may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")
