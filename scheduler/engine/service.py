"""The scheduler service: one replica's loop (``rqbeat run``).

A classic cron runner's Tick and Loop, distributed::

    loop:
      standby: take the lease if free, else wait until it expires or is released
      leader:  renew at ttl/3 (step down when a renew fails or the local deadline
               passes, even with Redis unreachable)
               dispatch due schedules, batch by batch
               watchdog: look at in-flight runs whose time has come
               backfill: at most one fire per active backfill (engine.backfiller)
               wait until the next due score, the next watchdog look, the next
               renew, or a wake-up published by an edit or an ack

The loop survives any error: tenacity runs the failed pass again after a pause that
grows to about a second (:mod:`scheduler.outage`), logging a thinned few lines. Waiting
is on a pub/sub socket with a client-side timeout (millisecond precision; Redis's own
blocking timeouts are only as fine as its ``hz``), so fire lag is not a polling tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.exceptions
from redis import Redis
from redis.client import PubSub
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from scheduler import rqkeys
from scheduler.allow import AllowList
from scheduler.clock import Clock, SystemClock, iso, redis_now_ms, time_reply_ms
from scheduler.connection import DEFAULT_REDIS_URL
from scheduler.engine import firewait
from scheduler.engine.alerts import AlertConfig, Alerter
from scheduler.engine.backfiller import Backfiller
from scheduler.engine.concurrent import Concurrent
from scheduler.engine.counters import CounterWatch
from scheduler.engine.dispatch import DEFAULT_BATCH, Dispatcher, Prepared
from scheduler.engine.healthalerts import HealthAlerts
from scheduler.engine.lease import Lease
from scheduler.engine.metrics import Metrics, MetricsServer
from scheduler.engine.takeover import Takeover
from scheduler.engine.unpause import Unpauser
from scheduler.engine.watchdog import Watchdog
from scheduler.errors import LeadershipLost
from scheduler.eviction import check_eviction
from scheduler.keys import DEFAULT_NAMESPACE, Keys
from scheduler.logs import worth_logging
from scheduler.outage import failure, outage_wait
from scheduler.redisconf import RedisSettings

log = logging.getLogger(__name__)

_ERRORS = (redis.exceptions.RedisError, OSError)
#: Re-read the sets at least this often even when no event arrived (edits and acks
#: publish one; this is the safety net for one missed while the subscription was down).
MAX_WAIT_S = 60.0
#: Decide a dispatch this long before it is due, so that at its time only the write is
#: left; a prepared dispatch woken later than ``PREPARED_LATE_S`` is decided again.
PREPARE_S = 0.2
PREPARED_LATE_S = 0.5
#: A replica reports itself this often (`rqbeat status`); its report expires after
#: NODE_TTL_S. The lease, renewed far more often, is what decides leadership.
NODE_TTL_S = 90
HEARTBEAT_S = 30


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Settings of one replica (``rqbeat run`` flags / ``RQBEAT_RUN_*``).

    ``redis`` says where Redis is (Sentinel, TLS); ``redis_url`` is the shorthand
    for a plain URL, used when ``redis`` is not given."""

    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    redis: RedisSettings | None = None
    namespace: str = DEFAULT_NAMESPACE
    node: str = ""
    lease_ms: int = 15_000
    batch_size: int = DEFAULT_BATCH
    allow: AllowList | None = None  # targets outside it are marked broken, not enqueued
    #: Serve Prometheus metrics on this port (None: off).
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    #: The namespace's webhook; schedules may name their own (Schedule.webhook).
    alerts: AlertConfig = field(default_factory=AlertConfig)

    def redis_settings(self) -> RedisSettings:
        return self.redis or RedisSettings(url=self.redis_url)

    def node_name(self) -> str:
        return self.node or f"{socket.gethostname()}-{os.getpid()}"


class _WakeUp(Exception):
    """Raised by the signal handler to cut a wait short."""


class Service:
    """One scheduler replica. ``run()`` blocks until ``stop()``."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        clock: Clock | None = None,
        conn: Redis | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """``clock`` and ``sleep`` (the pause after an error): for tests that drive time."""
        self.config = config
        self.clock = clock or SystemClock()
        self._sleep = sleep
        self.node = config.node_name()
        self.keys = Keys(config.namespace)
        self._owns_conn = conn is None
        self.conn = conn or config.redis_settings().connect(namespace=config.namespace)
        self.lease = Lease(self.conn, self.keys, self.node, config.lease_ms, self.clock)
        self.takeover = Takeover(self.conn, self.keys, self.clock)
        self.counters = CounterWatch(self.conn, self.keys, self.node)
        self.dispatcher = Dispatcher(self.conn, self.keys, batch_size=config.batch_size, allow=config.allow)
        self.metrics = Metrics(self.keys, self.conn)
        self.watchdog = Watchdog(self.conn, self.keys, batch_size=config.batch_size, metrics=self.metrics)
        self.unpauser = Unpauser(self.conn, self.keys)
        self.backfiller = Backfiller(self.conn, self.keys, allow=config.allow)
        self.concurrent = Concurrent(self.conn, self.keys)
        self.alerter = Alerter(
            self.conn, self.keys, config.alerts, is_leader=lambda: self.is_leader, metrics=self.metrics
        )
        self.alerter.health = HealthAlerts(
            self.conn, self.keys, self.alerter.submit, self.clock, config.alerts.health_every_s
        )
        self._metrics_server: MetricsServer | None = None
        # the alerts list's channel (the scripts publish there when they push an event)
        self._alert_channels = (self.keys.alerts, self.keys.alerts.encode())
        self._stop = threading.Event()
        self._pubsub: PubSub | None = None
        # tenacity retries a whole pass. Safe: a pass re-reads all it acts on (lease, sets,
        # definitions) and each write in it is one fenced transaction or compare-and-set
        # script, so even after an EXEC that reached Redis before the connection dropped,
        # the next pass re-decides from what Redis holds; it resends nothing. Any exception
        # is retried (a bug in one pass must not stop scheduling); only stop() ends it.
        self._retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=outage_wait(),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._pause,
            after=self._after_failure,
            before_sleep=self._log_failure,
            retry_error_callback=lambda _state: 0.0,  # stopped during an outage: leave the loop
        )
        self._redis_full = False  # the last failed pass met OOM (for the recovery line)
        self._waiting = False
        self._reported_role = ""
        # Monotonic time until which the last read of the sets still holds: nothing is
        # due before it unless an event says so. A renewal wake-up inside it needs no
        # reads (the idle path's Redis traffic is the renewal alone).
        self._plan_until: float | None = None
        self._prepared: Prepared | None = None  # decided ahead, due at _plan_until
        self._reported_at = 0.0

    @property
    def is_leader(self) -> bool:
        return self.lease.held

    def stop(self) -> None:
        """Ask the loop to finish, from another thread (signals use :meth:`on_signal`).
        Publishes a wake-up so a waiting loop notices at once."""
        self._stop.set()
        with contextlib.suppress(*_ERRORS):
            self.conn.publish(self.keys.events, "stop")

    def on_signal(self, signum: int, frame: object) -> None:
        """SIGTERM/SIGINT handler: stop, cutting a wait short so the lease is released
        (and a standby takes over) at once."""
        self._stop.set()
        if self._waiting:
            raise _WakeUp

    def run(self) -> None:
        """Run until :meth:`stop`. Raises :class:`ConfigError` before touching Redis
        when the metrics port cannot be opened."""
        if self.config.metrics_port is not None:
            self._metrics_server = self.metrics.serve(self.config.metrics_port, self.config.metrics_host)
        log.info(
            "replica node=%s namespace=%s lease_ms=%d starting",
            self.node,
            self.keys.namespace,
            self.config.lease_ms,
        )
        with contextlib.suppress(*_ERRORS):  # advice only; an unreachable Redis is retried below
            check_eviction(self.conn)
        self.alerter.start()
        try:
            while not self._stop.is_set():
                self._wait(self._recovering())
        finally:
            self._shutdown()

    def _recovering(self) -> float:
        """One pass, tried again through any error until it succeeds or :meth:`stop`
        is called; returns how long to wait (seconds)."""
        wait: float = self._retrying(self._step)
        failures = self._retrying.statistics.get("attempt_number", 1) - 1
        if failures and not self._stop.is_set():
            log.info("recovered node=%s after failures=%d", self.node, failures)
        if self._redis_full and not self._stop.is_set():
            log.warning("redis accepts writes again node=%s after refused=%d", self.node, failures)
            self.metrics.redis_full.set(0)
            self._redis_full = False
        return wait

    def _step(self) -> float:
        """One pass; returns how long to wait (seconds). An error ends the pass and
        :attr:`_retrying` runs it again after a pause."""
        if self._stop.is_set():  # stop() during a pause after an error: no more Redis calls
            return 0.0
        started = self.clock.monotonic()
        try:
            return self._lead() if self.lease.token is not None else self._stand_by()
        except LeadershipLost as exc:
            self._step_down(str(exc))
            return 0.0
        finally:
            self.metrics.loop_duration.observe(self.clock.monotonic() - started)

    def _after_failure(self, state: RetryCallState) -> None:
        """After every failed pass: count it, forget the subscription (events may be
        missed while it is down), and step down once the lease's local deadline has
        passed (a lease that cannot be renewed must not be trusted)."""
        exc = failure(state)
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            # its scripts are refused whole (they declare their flags): nothing of this
            # pass was written; the fires that pass meanwhile meet their misfire policy
            self.metrics.redis_oom.inc()
            self.metrics.redis_full.set(1)
            self._redis_full = True
        if isinstance(exc, _ERRORS):
            self.metrics.redis_errors.labels("loop").inc()
        self._drop_pubsub()
        if self.lease.token is not None and not self.lease.held:
            self._step_down("lease deadline passed while Redis was unreachable")

    def _log_failure(self, state: RetryCallState) -> None:
        """A line for the 1st, 2nd, 4th, 8th... failure in a row, not one per retry;
        a bug's traceback only with the first."""
        failures, exc = state.attempt_number, failure(state)
        if not worth_logging(failures):
            return
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            log.warning(
                "redis full node=%s epoch=%d refused=%d retry_in_s=%.2f error=%s "
                "(nothing written; free memory in Redis or raise maxmemory)",
                self.node, self.lease.epoch, failures, state.upcoming_sleep, exc,
            )  # fmt: skip
        elif isinstance(exc, _ERRORS):
            log.warning(
                "redis error node=%s failures=%d retry_in_s=%.2f error=%s (retrying)",
                self.node, failures, state.upcoming_sleep, exc,
            )  # fmt: skip
        else:
            log.error(
                "unexpected error node=%s failures=%d retry_in_s=%.2f (retrying)",
                self.node, failures, state.upcoming_sleep, exc_info=exc if failures == 1 else None,
            )  # fmt: skip

    def _pause(self, seconds: float) -> None:
        """The pause between tries: the injected ``sleep``, else one stop() cuts short."""
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._stop.wait(seconds)

    def _stand_by(self) -> float:
        """Take the lease when it is free; otherwise sleep until it would expire, a
        release is published, or the first fire is overdue (then take over at once if
        the leader's process is gone: :mod:`scheduler.engine.takeover`). One PTTL per
        wake while another replica leads; the takeover's reads only after an event."""
        self._subscribe()
        if self.takeover.wait_s() == 0.0:
            self._take_over_from_dead_leader()
        remaining_ms = self.lease.remaining_ms()
        if remaining_ms is None and self.lease.try_acquire():
            self.takeover.forget()
            self.metrics.set_leader(True)
            log.info("leader node=%s epoch=%d acquired", self.node, self.lease.epoch)
            self.counters.acquired(self.lease.epoch)
            self._heartbeat("leader")
            self.alerter.wake()  # events the last leader left behind
            return 0.0
        self._heartbeat("standby")
        self.takeover.lease_held()  # another replica leads: a read that saw no holder is stale
        wait_s = max(0.001, (remaining_ms or 0) / 1000.0)
        check_s = self.takeover.wait_s()
        return wait_s if check_s is None else max(0.001, min(wait_s, check_s))

    def _take_over_from_dead_leader(self) -> None:
        token = self.takeover.dead_leader()
        if token is not None and self.takeover.depose(token):
            log.warning(
                "leader gone node=%s dead_token=%s (its lease connection closed): taking over",
                self.node, token,
            )  # fmt: skip

    def _lead(self) -> float:
        token = self.lease.token
        assert token is not None
        if self.clock.monotonic() >= self.lease.renew_at:
            if not self.lease.renew():
                raise LeadershipLost("lease renewal refused: another replica holds it")
            self._heartbeat("leader")
        if not self.lease.held:
            raise LeadershipLost("local lease deadline passed")
        self._subscribe()
        started = self.clock.monotonic()
        renew_in = self.lease.renew_at - started
        if self._plan_until is not None and started < self._plan_until:
            return max(0.0, min(self._plan_until - started, renew_in))
        if self._prepared is not None and self._send_prepared(started):
            return 0.0
        pipe = self.conn.pipeline(transaction=False)
        pipe.time()
        pipe.zrange(self.keys.due, 0, 0, withscores=True)
        pipe.zrange(self.keys.running, 0, 0, withscores=True)
        pipe.zrange(self.keys.paused_until, 0, 0, withscores=True)
        pipe.zrange(self.keys.backfills, 0, 0, withscores=True)
        pipe.zrange(self.keys.concurrent, 0, 0, withscores=True)
        sent = self.clock.monotonic()
        time_reply, first_due, first_running, first_until, first_backfill, first_run = pipe.execute()
        received = self.clock.monotonic()
        now_ms = time_reply_ms(time_reply)
        firsts = {
            "running": first_running,
            "until": first_until,
            "backfill": first_backfill,
            "runs": first_run,
        }
        if self._work(now_ms, token, first_due, **firsts):
            self._plan_until = None
            return 0.0  # re-read the sets before planning a wait
        now_s = int(time_reply[0]) + int(time_reply[1]) / 1e6
        others = [*first_running, *first_until, *first_backfill, *first_run]
        return self._plan((sent, received), now_s, first_due, others, token)

    def _work(
        self,
        now_ms: int,
        token: str,
        first_due: list[tuple[bytes, float]],
        *,
        running: list[tuple[bytes, float]],
        until: list[tuple[bytes, float]],
        backfill: list[tuple[bytes, float]],
        runs: list[tuple[bytes, float]],
    ) -> bool:
        """Do what has come (dispatch, watchdog, pauses that end, backfills after the
        live fires); False when nothing had. Each list holds the first of its set."""
        worked = False
        if first_due and first_due[0][1] * 1000 <= now_ms:
            batch = self.dispatcher.dispatch(now_ms, token, self.lease.epoch)
            self.metrics.observe_batch(batch, now_ms)
            if batch.size >= self.config.batch_size:
                return True  # more is due: dispatch first, the rest can wait a pass
            worked = True
        if running and running[0][1] * 1000 <= now_ms:
            self.watchdog.check(now_ms)
            worked = True
        if runs and runs[0][1] * 1000 <= now_ms:
            self.concurrent.step(now_ms, token, self.lease.epoch)
            worked = True
        if until and until[0][1] * 1000 <= now_ms:
            self.unpauser.resume_due(now_ms, token)
            worked = True
        if backfill and backfill[0][1] * 1000 <= now_ms:
            self.backfiller.step(now_ms, token, self.lease.epoch)
            worked = True
        return worked

    def _plan(
        self,
        read: tuple[float, float],
        now_s: float,
        first_due: list[tuple[bytes, float]],
        others: list[tuple[bytes, float]],
        token: str,
    ) -> float:
        """How long to wait: until the next due fire, or the first of ``others`` (the
        next watchdog look, the next pause's end, the next backfill look), at most
        :data:`MAX_WAIT_S`; a dispatch due within :data:`PREPARE_S` is decided now
        (and its first write packed). ``now_s`` is Redis time as read by a round trip
        sent and received at the monotonic times ``read``."""
        nexts = [float(s) - now_s for s in [*(s for _, s in first_due[:1]), *(s for _, s in others)]]
        until_next = max(0.0, min([*nexts, MAX_WAIT_S]))
        if first_due and until_next == nexts[0]:  # the next thing to do is a dispatch
            if until_next > PREPARE_S:
                until_next -= PREPARE_S  # wake a little early to decide it ahead of time
            else:
                due_ms = round(first_due[0][1] * 1000)
                self._prepared = self._armed(self.dispatcher.prepare(due_ms, token, self.lease.epoch))
        # Redis read its clock about half way through the round trip: plan from there,
        # in microseconds (whole milliseconds made every planned wake ~0.5 ms late); a
        # prepared send, from the reply, so that it never goes out before its time.
        sent, received = read
        if self._prepared is not None:
            self._plan_until = firewait.surely_at(received, until_next)
        else:
            self._plan_until = (sent + received) / 2 + until_next
        return max(0.0, min(self._plan_until, self.lease.renew_at) - self.clock.monotonic())

    def _armed(self, prepared: Prepared | None) -> Prepared | None:
        """``prepared`` with its first write packed (:meth:`Dispatcher.arm`): done at
        once, 200 ms ahead, as packing a large batch takes milliseconds."""
        if prepared is None:
            return None
        try:
            return self.dispatcher.arm(prepared)
        except _ERRORS as exc:  # the send packs its own; the next pass meets the error
            log.debug("could not pack the send ahead node=%s error=%s", self.node, exc)
            return prepared

    def _send_prepared(self, started: float) -> bool:
        """At the due time of a batch decided ahead (:meth:`Dispatcher.prepare`), only
        its write is left: one round trip. False when there is nothing to send or it
        no longer applies (an edit raced it, or this wake is late): plan as usual."""
        prepared, self._prepared = self._prepared, None
        late_s = started - (self._plan_until or started)
        if prepared is None or self._plan_until is None or late_s > PREPARED_LATE_S:
            return False
        now_ms = prepared.at_ms + round(late_s * 1000)  # Redis time, told by the monotonic clock
        batch = self.dispatcher.send(prepared, now_ms)
        self.metrics.observe_batch(batch, now_ms)
        self._plan_until = None
        return batch.size > 0

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early for any published event; the last
        milliseconds before a prepared send are slept on the clock, which is precise
        where the socket's wait is not (:mod:`scheduler.engine.firewait`)."""
        if seconds <= 0 or self._stop.is_set():
            return
        send_at = self._plan_until if self._prepared is not None else None
        send_in = None if send_at is None else send_at - self.clock.monotonic()
        coarse = firewait.split(seconds, send_in)
        if self._wait_for_events(coarse) or send_at is None or self._stop.is_set():
            return
        # after a wait, the plan's clock reading is stale; a busy loop's is fresh
        firewait.sleep_until(self._reckon_again(send_at) if coarse > 0 else send_at, self.clock)

    def _reckon_again(self, send_at: float) -> float:
        """The prepared send's time, reckoned again from a fresh ``TIME`` read (one
        round trip, only after a wait: the loaded 200 ms-old read may have taken a
        millisecond, its bound is that much late); the earlier of the two bounds,
        each of which keeps the send from reaching Redis before its due time."""
        prepared = self._prepared
        if prepared is None:
            return send_at
        try:
            seconds, micros = self.conn.time()
            received = self.clock.monotonic()
        except _ERRORS:  # the send meets the error, and the retried pass handles it
            return send_at
        until_s = prepared.at_ms / 1000 - (int(seconds) + int(micros) / 1e6)
        return min(send_at, firewait.surely_at(received, until_s))

    def _wait_for_events(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for published events and take them in; True when the
        wait ended early (an event, a stop, a lost subscription)."""
        if seconds <= 0:
            return False
        pubsub = self._pubsub
        if pubsub is None:
            return self._stop.wait(seconds)  # Event.wait returns early on stop()
        try:
            self._waiting = True
            if self._stop.is_set():  # a signal between the caller's check and the flag
                return True
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=seconds)
            self._waiting = False
            woken = message is not None
            while message is not None:  # drain: one re-plan covers them all
                if message.get("channel") in self._alert_channels:
                    self.alerter.wake()  # a script pushed an alert event
                else:
                    self._plan_until = None
                    self.takeover.forget()
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            return woken
        except _WakeUp:
            self._drop_pubsub()
        except _ERRORS as exc:
            self.metrics.redis_errors.labels("events").inc()
            log.warning("event subscription lost node=%s error=%s", self.node, exc)
            self._drop_pubsub()
        finally:
            self._waiting = False
        return True

    def _subscribe(self) -> None:
        if self._pubsub is None:
            pubsub = self.conn.pubsub()  # type: ignore[no-untyped-call]
            pubsub.subscribe(self.keys.events, self.keys.alerts)
            self._pubsub = pubsub
            self.alerter.wake()  # a publish may have been missed while unsubscribed

    def _drop_pubsub(self) -> None:
        self._plan_until = None  # events may have been missed while unsubscribed
        self.takeover.forget()
        if self._pubsub is not None:
            with contextlib.suppress(*_ERRORS):
                self._pubsub.close()
            self._pubsub = None

    def _step_down(self, reason: str) -> None:
        epoch = self.lease.epoch
        self._plan_until = None
        self.lease.drop()
        self.metrics.set_leader(False)
        log.warning("stepped down node=%s epoch=%d reason=%s", self.node, epoch, reason)

    def _heartbeat(self, role: str) -> None:
        """Report this replica for `rqbeat status`: on a role change, else at most
        every HEARTBEAT_S (the idle path's Redis traffic stays flat)."""
        now = self.clock.monotonic()
        if role == self._reported_role and now - self._reported_at < HEARTBEAT_S:
            return
        self._reported_role, self._reported_at = role, now
        now_ms = redis_now_ms(self.conn)
        pipe = self.conn.pipeline(transaction=False)
        pipe.zadd(self.keys.nodes, {self.node: now_ms / 1000})
        pipe.hset(
            self.keys.node(self.node),
            mapping={
                "role": role,
                "epoch": self.lease.epoch,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "seen_at": iso(now_ms),
                **self.counters.node_fields(),
                # `status` compares these with the workers'
                rqkeys.VERSION_FIELD: rqkeys.RQ_VERSION,
                rqkeys.PREFIX_FIELD: rqkeys.PREFIX,
            },
        )
        pipe.expire(self.keys.node(self.node), NODE_TTL_S)
        if role == "leader":  # one replica forgets the departed ones; all need not
            pipe.zremrangebyscore(self.keys.nodes, "-inf", now_ms / 1000 - NODE_TTL_S)
        self.counters.read_into(pipe)  # the loss check rides on the heartbeat
        *_, epoch, revision = pipe.execute()
        self.counters.observe(epoch, revision)

    def _shutdown(self) -> None:
        try:
            if self.lease.release():
                log.info("leader node=%s epoch=%d released the lease", self.node, self.lease.epoch)
            self.lease.close()
            self.conn.zrem(self.keys.nodes, self.node)
            self.conn.delete(self.keys.node(self.node))
        except _ERRORS as exc:
            log.warning("could not release the lease cleanly node=%s error=%s", self.node, exc)
        self.metrics.set_leader(False)
        self._drop_pubsub()
        self.alerter.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        if self._owns_conn:
            self.conn.close()
        log.info("replica node=%s stopped", self.node)
