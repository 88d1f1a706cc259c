"""The last milliseconds before a prepared fire are slept on the clock, not on the
event socket (scheduler.engine.firewait): the split, the sleep, and the service's use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest

from scheduler.engine import firewait
from scheduler.engine.dispatch import Prepared
from scheduler.engine.service import Service, ServiceConfig
from tests.fakeclock import FakeClock

NOWHERE = "redis://127.0.0.1:1/0"  # never contacted: the socket is a fake


def test_a_wait_that_reaches_the_send_hands_its_last_milliseconds_to_the_clock() -> None:
    assert firewait.split(0.5, 0.5, fine_s=0.003) == pytest.approx(0.497)
    # the planned wait rounds a hair past the send: still the send's wait
    assert firewait.split(0.5000001, 0.5, fine_s=0.003) == pytest.approx(0.497)


def test_a_send_closer_than_the_fine_part_is_all_clock() -> None:
    assert firewait.split(0.002, 0.002, fine_s=0.003) == 0.0


def test_other_waits_stay_on_the_socket() -> None:
    assert firewait.split(0.5, None) == 0.5  # nothing prepared
    assert firewait.split(0.3, 0.5) == 0.3  # the wait ends before the send (a renewal)
    assert firewait.split(0.498, 0.5, fine_s=0.003) == pytest.approx(0.497)  # in the fine part


class UndersleepingClock(FakeClock):
    """A sleep that ends early (a signal, a coarse timer): half of what was asked."""

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds / 2, 1e-7)


def test_sleep_until_reaches_the_deadline_even_when_sleeps_end_early() -> None:
    clock = UndersleepingClock(start=10.0)
    firewait.sleep_until(10.002, clock)
    assert clock.monotonic() >= 10.002
    assert clock.monotonic() - 10.002 < 1e-6


def test_sleep_until_a_past_deadline_returns_at_once() -> None:
    clock = FakeClock(start=10.0)
    firewait.sleep_until(9.0, clock)
    assert clock.monotonic() == 10.0


class FakePubSub:
    """Records how long the service waited on the socket; delivers ``messages``."""

    def __init__(self, clock: FakeClock, messages: list[dict[str, Any]] | None = None) -> None:
        self.clock = clock
        self.messages = messages or []
        self.timeouts: list[float] = []

    def get_message(self, ignore_subscribe_messages: bool = False, timeout: float = 0.0) -> Any:
        if timeout:
            self.timeouts.append(timeout)
        if self.messages:
            return self.messages.pop(0)
        self.clock.now += timeout
        return None

    def close(self) -> None:
        pass


@pytest.fixture
def service() -> Iterator[Service]:
    made = Service(ServiceConfig(redis_url=NOWHERE, node="unit"), clock=FakeClock(start=100.0))
    yield made
    made.conn.close()


def _prepare(service: Service, due_in_s: float) -> tuple[FakeClock, FakePubSub]:
    clock = cast(FakeClock, service.clock)
    pubsub = FakePubSub(clock)
    service._pubsub = cast(Any, pubsub)
    service._plan_until = clock.monotonic() + due_in_s
    service._prepared = Prepared(at_ms=1_000, epoch=1, batches=[])
    return clock, pubsub


def test_the_service_waits_on_the_socket_then_sleeps_to_the_due_moment(service: Service) -> None:
    clock, pubsub = _prepare(service, 0.2)
    service._wait(0.2)
    assert pubsub.timeouts == [pytest.approx(0.2 - firewait.FINE_S)]
    assert clock.monotonic() == pytest.approx(100.2)


def test_an_event_during_the_socket_wait_skips_the_clock_sleep(service: Service) -> None:
    clock, pubsub = _prepare(service, 0.2)
    pubsub.messages = [{"channel": service.keys.events, "data": "edit"}]
    service._wait(0.2)
    assert clock.monotonic() == 100.0  # back to re-plan at once, the send not taken
    assert service._plan_until is None


def test_without_a_prepared_send_the_whole_wait_is_on_the_socket(service: Service) -> None:
    _clock, pubsub = _prepare(service, 0.2)
    service._prepared = None
    service._wait(0.2)
    assert pubsub.timeouts == [0.2]


def test_a_prepared_send_is_reckoned_from_the_reply_of_the_time_read() -> None:
    # TIME was read at some point between sending (10.000) and the reply (10.004);
    # counting from the reply, Redis's clock has surely reached the due time
    assert firewait.surely_at(10.004, 0.2) == pytest.approx(10.204)


def test_the_service_plans_a_prepared_send_from_the_reply_and_other_wakes_from_the_middle(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = Prepared(at_ms=1_000_100, epoch=1, batches=[])
    monkeypatch.setattr(service.dispatcher, "prepare", lambda *_: prepared)
    monkeypatch.setattr(service.dispatcher, "arm", lambda p: p)
    now_s = 1_000.0
    service._plan((99.0, 99.004), now_s, [(b"s", now_s + 0.1)], [], "1:unit")
    assert service._prepared is prepared
    assert service._plan_until == pytest.approx(99.104)  # never before its time

    service._prepared = None
    service._plan((99.0, 99.004), now_s, [(b"s", now_s + 30.0)], [], "1:unit")
    assert service._prepared is None  # far off: wake 200 ms ahead, planned from the middle
    assert service._plan_until == pytest.approx(99.002 + 30.0 - 0.2)


def test_a_fresh_time_read_after_the_wait_can_bring_the_send_earlier_never_later(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, _pubsub = _prepare(service, 0.2)  # planned send at monotonic 100.2
    service._prepared = Prepared(at_ms=1_000_100, epoch=1, batches=[])  # due at Redis 1000.100 s
    # read after the socket wait (at 100.197): Redis says 1000.098, so it reaches the
    # due time by 100.199, earlier than the plan's bound
    monkeypatch.setattr(service.conn, "time", lambda: (1000, 98_000))
    service._wait(0.2)
    assert clock.monotonic() == pytest.approx(100.199)

    clock, _pubsub = _prepare(service, 0.2)  # from 100.199: planned at 100.399
    service._prepared = Prepared(at_ms=1_000_100, epoch=1, batches=[])
    monkeypatch.setattr(service.conn, "time", lambda: (1000, 0))  # a later bound: the plan's stands
    service._wait(0.2)
    assert clock.monotonic() == pytest.approx(100.399)


def test_a_send_due_within_the_fine_part_is_not_reckoned_again(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, pubsub = _prepare(service, 0.002)  # a busy loop: the plan's reading is fresh
    reads: list[int] = []

    def time_read() -> tuple[int, int]:
        reads.append(1)
        return (0, 0)

    monkeypatch.setattr(service.conn, "time", time_read)
    service._wait(0.002)
    assert reads == []  # no extra round trip per fire when fires come every millisecond
    assert pubsub.timeouts == []
    assert clock.monotonic() == pytest.approx(100.002)
