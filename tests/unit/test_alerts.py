"""The alert sender's pure parts: the signature, the retry rule, the rate limiter
(with a fake clock), the event an ACK script pushes, and the bounded queue."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from redis import Redis

from scheduler.engine.alerts import AlertConfig, Alerter, AlertEvent, RateLimiter
from scheduler.engine.webhook import RetryPolicy, Sender, WebhookRejected, encode, signature, verify
from scheduler.keys import Keys
from scheduler.protocol import AlertKind
from tests.fakeclock import FakeClock

SECRET = b"s3cret"
BODY = b'{"kind":"gave_up","schedule":"s1"}'


def test_the_signature_is_stripes_scheme_over_the_timestamp_and_the_body() -> None:
    header = signature(SECRET, 1_800_000_000, BODY)
    mac = hmac.new(SECRET, b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1800000000,v1={mac}"
    assert verify(SECRET, header, BODY, now_s=1_800_000_100)


@pytest.mark.parametrize(
    ("secret", "body", "now_s"),
    [
        (b"other", BODY, 1_800_000_000),  # another secret
        (SECRET, BODY + b" ", 1_800_000_000),  # a changed body
        (SECRET, BODY, 1_800_000_301),  # a replay after the tolerance
    ],
)
def test_a_signature_does_not_verify_for_another_secret_body_or_time(
    secret: bytes, body: bytes, now_s: int
) -> None:
    assert not verify(secret, signature(SECRET, 1_800_000_000, BODY), body, now_s=now_s)


def test_a_malformed_header_does_not_verify() -> None:
    for header in ("", "v1=abc", "t=x,v1=abc", "t=1,t=2,v1=abc"):
        assert not verify(SECRET, header, BODY, now_s=1)


class Receiver:
    """A webhook that answers with the given statuses, then 200."""

    def __init__(self, *statuses: int | Exception) -> None:
        self.statuses = list(statuses)
        self.calls: list[dict[str, str]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        self.calls.append(headers)
        status = self.statuses.pop(0) if self.statuses else 200
        if isinstance(status, Exception):
            raise status
        return status


def sender(receiver: Receiver, clock: FakeClock, **policy: Any) -> Sender:
    return Sender(
        secret=SECRET,
        policy=RetryPolicy(**policy),
        wall_s=lambda: clock.now,
        sleep=clock.sleep,
        post=receiver,
    )


def test_a_5xx_or_a_connection_error_is_retried_with_growing_waits() -> None:
    clock = FakeClock(start=1_800_000_000)
    refused = WebhookRejected("http://h", "connection failed", transient=True)
    receiver = Receiver(500, refused, 503)
    done = sender(receiver, clock, first_wait_s=1, max_wait_s=3).deliver("http://h", BODY)
    assert (done.status, done.attempts) == (200, 4)
    stamps = [int(c["Rqbeat-Signature"].split(",")[0][2:]) for c in receiver.calls]
    assert stamps == [1_800_000_000, 1_800_000_001, 1_800_000_003, 1_800_000_006]  # 1, 2, then capped 3
    assert all(verify(SECRET, c["Rqbeat-Signature"], BODY, clock.now) for c in receiver.calls)


def test_a_4xx_is_final_and_retries_stop_at_the_attempts() -> None:
    clock = FakeClock()
    with pytest.raises(WebhookRejected) as refused:
        sender(Receiver(404), clock).deliver("http://h", BODY)
    assert (refused.value.status, refused.value.attempts) == (404, 1)
    with pytest.raises(WebhookRejected) as failing:
        sender(Receiver(*[500] * 9), clock, attempts=3).deliver("http://h", BODY)
    assert (failing.value.status, failing.value.attempts) == (500, 3)


def test_the_rate_limiter_allows_one_per_key_per_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, clock)
    assert limiter.allow(("s1", "gave_up"))
    assert not limiter.allow(("s1", "gave_up"))
    assert limiter.allow(("s1", "broken")) and limiter.allow(("s2", "gave_up"))  # per schedule and kind
    clock.sleep(59.9)
    assert not limiter.allow(("s1", "gave_up"))
    clock.sleep(0.1)
    assert limiter.allow(("s1", "gave_up"))


def test_the_rate_limiter_forgets_expired_keys_when_full() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.allow(key)
    clock.sleep(61)
    assert limiter.allow("d")
    assert len(limiter._last) == 1


def test_an_event_from_a_script_reads_back_and_has_a_stable_id_and_body() -> None:
    raw = json.dumps(
        {
            "kind": "gave_up",
            "schedule": "s1",
            "fire_at": "2027-01-01T00:00:00.000Z",
            "job_id": "s1-1798761600000-3",
            "detail": "RuntimeError: boom",
            "at": "2027-01-01T00:00:05.000Z",
            "recovered": False,
        }
    )
    event = AlertEvent.from_script(raw)
    assert event == AlertEvent(
        kind=AlertKind.GAVE_UP,
        schedule_id="s1",
        fire_ms=1_798_761_600_000,
        detail="RuntimeError: boom",
        job_id="s1-1798761600000-3",
        at_ms=1_798_761_605_000,
    )
    body = json.loads(encode(event.body("ns")))
    assert body == {
        "id": "s1:gave_up:raised:1798761605000",
        "namespace": "ns",
        "kind": "gave_up",
        "recovered": False,
        "schedule": "s1",
        "queue": None,
        "fire_at": "2027-01-01T00:00:00.000Z",
        "job_id": "s1-1798761600000-3",
        "detail": "RuntimeError: boom",
        "timestamp": "2027-01-01T00:00:05.000Z",
    }
    # cjson encodes an empty Lua string for "no fire" (a broken schedule)
    broken = AlertEvent.from_script(
        json.dumps({"kind": "broken", "schedule": "s2", "fire_at": "", "at": "2027-01-01T00:00:05.000Z"})
    )
    assert broken.fire_ms is None and broken.job_id is None


def test_a_finding_about_a_queue_fits_the_same_event() -> None:
    event = AlertEvent(
        kind=AlertKind.NO_WORKER, schedule_id=None, queue="reports", detail="no worker", at_ms=1
    )
    assert event.subject == "queue:reports"
    assert event.body("ns")["schedule"] is None and event.body("ns")["queue"] == "reports"


def test_submit_never_waits_it_drops_and_counts_when_full_or_rate_limited() -> None:
    unused = Redis(port=1)  # never connected: submit does not touch Redis
    alerter = Alerter(
        unused, Keys("ns"), AlertConfig(queue_size=2), is_leader=lambda: False, clock=FakeClock()
    )
    events = [AlertEvent(kind=AlertKind.GAVE_UP, schedule_id=f"s{i}", at_ms=i) for i in range(3)]
    assert [alerter.submit(e) for e in events] == [True, True, False]  # the third: queue full
    assert not alerter.submit(events[0])  # the same schedule and kind within the window
