"""Riding out a Redis outage, without Redis: the service loop's retries (tenacity, with a
fake clock's sleep) and the start-up wait of ``rqbeat run`` / ``rqbeat worker``.

No test here waits in real time: the pauses go to a :class:`FakeClock`. The Redis
clients are never connected (their address is a closed port; every call that would
reach it is replaced).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
import redis.exceptions
from redis import Redis
from tenacity import RetryCallState, Retrying

from scheduler.engine.service import Service, ServiceConfig
from scheduler.outage import (
    FIRST_PAUSE_S,
    JITTER_S,
    MAX_PAUSE_S,
    REDIRECT_PAUSE_S,
    outage_wait,
    wait_until_reachable,
)
from scheduler.slotowner import SlotMigrating, SlotMoved
from tests.fakeclock import FakeClock

NOWHERE = "redis://127.0.0.1:1/0"  # never dialled: the steps that would are replaced


class Outage:
    """Fails ``failures`` times with ``error``, then returns ``result``; every pause
    goes to a fake clock and is recorded."""

    def __init__(self, failures: int, error: Exception, result: float = 0.25) -> None:
        self.clock = FakeClock()
        self.pauses: list[float] = []
        self.calls = 0
        self.failures = failures
        self.error = error
        self.result = result
        self.on_pause: Callable[[int], None] = lambda _n: None

    def step(self) -> float:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.result

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock.sleep(seconds)
        self.on_pause(len(self.pauses))


def expected_floor(failure: int) -> float:
    """The pause after the ``failure``-th failure in a row, before jitter."""
    return min(FIRST_PAUSE_S * 2.0 ** (failure - 1), MAX_PAUSE_S)


def assert_backs_off(pauses: list[float]) -> None:
    for n, pause in enumerate(pauses, start=1):
        assert expected_floor(n) <= pause <= expected_floor(n) + JITTER_S, (n, pause)


@pytest.fixture
def service_for() -> Iterator[Callable[[Outage], Service]]:
    made: list[Service] = []

    def make(outage: Outage) -> Service:
        config = ServiceConfig(redis_url=NOWHERE, node="unit", lease_ms=2_000)
        service = Service(config, clock=outage.clock, sleep=outage.sleep)
        made.append(service)
        return service

    yield make
    for service in made:
        service.conn.close()


def loop_errors(service: Service) -> float:
    value = service.metrics.registry.get_sample_value("rqbeat_redis_errors_total", {"where": "loop"})
    return value or 0.0


def test_loop_backs_off_exponentially_to_a_cap_and_recovers(
    service_for: Callable[[Outage], Service],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage(12, redis.exceptions.ConnectionError("Connection refused."))
    service = service_for(outage)
    monkeypatch.setattr(service, "_stand_by", outage.step)  # a standby's pass: the lease is not held
    caplog.set_level(logging.INFO, logger="scheduler")

    assert service._recovering() == outage.result

    assert outage.calls == 13
    assert len(outage.pauses) == 12
    assert_backs_off(outage.pauses)
    assert expected_floor(12) == MAX_PAUSE_S  # the cap was reached, and held
    assert outage.clock.now == pytest.approx(1_000.0 + sum(outage.pauses))
    assert loop_errors(service) == 12
    lines = [r for r in caplog.records if r.name == "scheduler.engine.service"]
    warned = [r.args[1] for r in lines if r.getMessage().startswith("redis error ")]  # type: ignore[index]
    assert warned == [1, 2, 4, 8]  # thinned: an outage logs a handful of lines
    assert lines[-1].getMessage() == "recovered node=unit after failures=12"


def test_a_leader_steps_down_when_its_lease_lapses_during_an_outage(
    service_for: Callable[[Outage], Service],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage(8, redis.exceptions.TimeoutError("Timeout reading from socket"))
    service = service_for(outage)
    service.lease.token, service.lease.epoch = "7:unit", 7
    service.lease._extend_from(outage.clock.monotonic())
    monkeypatch.setattr(service, "_lead", outage.step)
    monkeypatch.setattr(service, "_stand_by", outage.step)
    caplog.set_level(logging.INFO, logger="scheduler")

    service._recovering()

    # the fake clock passed the 2 s lease while Redis was down: no longer trusted
    assert service.lease.token is None and not service.is_leader
    assert "stepped down node=unit epoch=7 reason=lease deadline passed" in caplog.text
    assert_backs_off(outage.pauses)


def test_stop_during_an_outage_ends_the_retries(
    service_for: Callable[[Outage], Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(1_000_000, redis.exceptions.ConnectionError("Connection refused."))
    service = service_for(outage)
    monkeypatch.setattr(service, "_stand_by", outage.step)
    outage.on_pause = lambda n: service.on_signal(15, None) if n == 3 else None  # SIGTERM, 3rd pause

    assert service._recovering() == 0.0
    assert outage.calls == 3  # no pass after the stop


def test_a_bug_in_a_pass_is_retried_with_one_traceback(
    service_for: Callable[[Outage], Service],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage(4, KeyError("definition"))
    service = service_for(outage)
    monkeypatch.setattr(service, "_stand_by", outage.step)
    caplog.set_level(logging.INFO, logger="scheduler")

    assert service._recovering() == outage.result

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.args[1] for r in errors] == [1, 2, 4]  # type: ignore[index]
    assert [r.exc_info is not None for r in errors] == [True, False, False]
    assert loop_errors(service) == 0  # not a Redis error
    assert_backs_off(outage.pauses)


def pinger(monkeypatch: pytest.MonkeyPatch, outage: Outage) -> Redis:
    conn = Redis.from_url(NOWHERE)
    monkeypatch.setattr(conn, "ping", outage.step)
    return conn


def test_start_up_waits_until_redis_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    outage = Outage(9, redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"))
    caplog.set_level(logging.INFO, logger="scheduler")

    wait_until_reachable(pinger(monkeypatch, outage), where="redis://h:6379/0", sleep=outage.sleep)

    assert outage.calls == 10
    assert_backs_off(outage.pauses)
    waiting = [r for r in caplog.records if r.getMessage().startswith("redis=redis://h:6379/0 unreachable")]
    assert [r.args[1] for r in waiting] == [1, 2, 4, 8]  # type: ignore[index]
    assert caplog.records[-1].getMessage() == "redis=redis://h:6379/0 reachable after failures=9"


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.AuthenticationError("invalid username-password pair"),
        redis.exceptions.ResponseError("NOPERM this user has no permissions to run the 'ping' command"),
    ],
)
def test_start_up_does_not_wait_for_what_waiting_cannot_fix(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    outage = Outage(1, error)

    with pytest.raises(type(error)):
        wait_until_reachable(pinger(monkeypatch, outage), where="redis://h:6379/0", sleep=outage.sleep)

    assert (outage.calls, outage.pauses) == (1, [])


def _failed_try(attempt: int, exc: BaseException) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_a_slot_half_moved_or_moved_is_tried_again_soon_however_many_tries_failed() -> None:
    """A resharding answers at once and ends with SETSLOT NODE (then one MOVED): the
    tries after it must not wait a grown outage pause."""
    wait = outage_wait()
    migrating = SlotMigrating("cluster slot 15138 is migrating: TryAgainError")
    assert wait(_failed_try(8, migrating)) == REDIRECT_PAUSE_S
    assert wait(_failed_try(9, SlotMoved("cluster slot 15138 moved: MovedError"))) == REDIRECT_PAUSE_S
    assert wait(_failed_try(8, redis.exceptions.ConnectionError("refused"))) >= MAX_PAUSE_S
