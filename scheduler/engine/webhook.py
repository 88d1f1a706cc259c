"""Delivering one alert to one webhook: a signed JSON POST, retried when it may pass.

The signature follows Stripe's scheme, so receivers can reuse what they know::

    Rqbeat-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The timestamp is inside the signed text, so a captured request cannot be replayed
later than the receiver's tolerance; each attempt is signed afresh. A delivery is
retried (exponential back-off, capped) only where another try may pass: the
connection failed or timed out, or the receiver answered 5xx. A 4xx is the
receiver's refusal and is final. A retried POST may arrive twice: the body's ``id``
is the same on every attempt, for the receiver to drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from scheduler.errors import RqbeatError

SIGNATURE_HEADER = "Rqbeat-Signature"
#: How far a receiver should accept a signature's timestamp from its own clock.
DEFAULT_TOLERANCE_S = 300


class WebhookRejected(RqbeatError):
    """A webhook refused an alert, or could not be reached within the retries."""

    def __init__(self, url: str, reason: str, *, status: int | None = None, transient: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        self.transient = transient  # worth another try (connection error, 5xx)
        self.attempts = 1  # made before giving up (set by Sender.deliver)
        super().__init__(f"{url}: {reason}")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How one delivery is retried (tenacity: ``stop_after_attempt | stop_after_delay``)."""

    attempts: int = 5
    max_delay_s: float = 120.0  # give up after this long in all
    first_wait_s: float = 0.5
    max_wait_s: float = 30.0  # between two attempts
    timeout_s: float = 5.0  # of one request


@dataclass(frozen=True, slots=True)
class Delivered:
    """A delivery that succeeded: the receiver's status, after how many attempts."""

    status: int
    attempts: int


def signature(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """The ``Rqbeat-Signature`` header value of ``body`` sent at ``timestamp_s``. Pure."""
    mac = hmac.new(secret, f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={mac}"


def verify(
    secret: bytes, header: str, body: bytes, now_s: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> bool:
    """What a receiver checks: a ``v1`` signature of ``body`` by ``secret``, with a
    timestamp within ``tolerance_s`` of ``now_s``. Constant-time compare. Pure."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k == "t" and v.isdigit()]
    macs = [v for k, _, v in parts if k == "v1"]
    if len(stamps) != 1 or not macs or abs(now_s - int(stamps[0])) > tolerance_s:
        return False
    expected = signature(secret, int(stamps[0]), body).partition(",v1=")[2]
    return any(hmac.compare_digest(expected, mac) for mac in macs)


def encode(event: Mapping[str, Any]) -> bytes:
    """The body: compact JSON, keys sorted (the bytes that are signed)."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


@dataclass(kw_only=True)
class Sender:
    """POSTs bodies to webhooks. ``post`` and ``sleep`` are seams for tests."""

    secret: bytes | None = field(default=None, repr=False)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    wall_s: Callable[[], float]
    sleep: Callable[[float], None]
    post: Callable[[str, bytes, dict[str, str], float], int] | None = None

    def deliver(self, url: str, body: bytes) -> Delivered:
        """Deliver ``body`` to ``url``, retrying transient failures; raises
        :class:`WebhookRejected` with the last failure when it never passed."""
        p = self.policy
        state = {"attempts": 0}

        def count(call: RetryCallState) -> None:
            state["attempts"] = call.attempt_number

        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, WebhookRejected) and exc.transient),
            stop=stop_after_attempt(p.attempts) | stop_after_delay(p.max_delay_s),
            wait=wait_exponential(multiplier=p.first_wait_s, max=p.max_wait_s),
            sleep=self.sleep,
            before=count,
            reraise=True,
        )
        try:
            status = retrying(self._attempt, url, body)
        except WebhookRejected as exc:
            exc.attempts = state["attempts"]
            raise
        return Delivered(status, state["attempts"])

    def _attempt(self, url: str, body: bytes) -> int:
        headers = {"Content-Type": "application/json", "User-Agent": "rqbeat-alerts"}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, int(self.wall_s()), body)
        status = (self.post or http_post)(url, body, headers, self.policy.timeout_s)
        if status >= 500:
            raise WebhookRejected(url, f"HTTP {status}", status=status, transient=True)
        if status >= 300:
            raise WebhookRejected(url, f"HTTP {status}", status=status)
        return status


def http_post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """One POST with the standard library; returns the status (an HTTP error status is
    returned, not raised); a connection failure is a transient :class:`WebhookRejected`."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out, reset
        reason = getattr(exc, "reason", exc)
        raise WebhookRejected(url, f"connection failed: {reason}", transient=True) from None
