"""Who may act, and the headers every response carries.

The dashboard reads without credentials (like rq-dashboard; it binds 127.0.0.1 unless
told otherwise). Actions (pause, resume, trigger now) are off unless
``allow_actions``, and then each needs:

* **credentials**: the token (``RQBEAT_WEB_TOKEN``) as ``Authorization: Bearer``,
  or the unlock cookie that posting the token to the unlock form sets (an HMAC of a
  nonce keyed by the token, so changing the token logs everyone out and nothing
  secret sits in the cookie); or HTTP basic credentials
  (``RQBEAT_WEB_USERNAME``/``RQBEAT_WEB_PASSWORD``), which browsers prompt for;
* **CSRF protection**: a double-submit token, a random value in a ``SameSite=Strict``
  cookie that each action form repeats in a hidden field; a request from another site
  carries neither the cookie (SameSite) nor can it read the value to forge the field.
  A cross-site ``Origin`` header is refused as well.

Every response carries a Content-Security-Policy without inline script, so even a
string that escaped the templates' autoescaping could not run.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from scheduler.errors import ConfigError

CSRF_COOKIE = "rqbeat_csrf"
CSRF_FIELD = "csrf"
UNLOCK_COOKIE = "rqbeat_unlock"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'self'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, kw_only=True)
class ActionAuth:
    """Credentials that unlock actions; ``allow_actions=False`` means read-only."""

    allow_actions: bool = False
    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.allow_actions and not (self.token or (self.username and self.password)):
            raise ConfigError(
                "allow_actions",
                True,
                "needs RQBEAT_WEB_TOKEN or RQBEAT_WEB_USERNAME and RQBEAT_WEB_PASSWORD in the environment",
            )
        if bool(self.username) != bool(self.password):
            raise ConfigError("RQBEAT_WEB_USERNAME", self.username, "set both the username and the password")

    @property
    def basic(self) -> bool:
        return bool(self.username and self.password)

    def secrets(self) -> tuple[str, ...]:
        """What must never appear in a page or a log line."""
        return tuple(s for s in (self.token, self.password) if s)

    def check_bearer(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        return bool(self.token) and scheme.lower() == "bearer" and _same(value.strip(), self.token or "")

    def check_basic(self, username: str | None, password: str | None) -> bool:
        return (
            self.basic
            and _same(username or "", self.username or "")
            and _same(password or "", self.password or "")
        )

    def unlock_value(self) -> str:
        """A fresh unlock cookie for a browser that proved it knows the token."""
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._mac(nonce)}"

    def check_unlock(self, cookie: str | None) -> bool:
        nonce, _, mac = (cookie or "").partition(".")
        return bool(self.token and nonce and mac) and _same(mac, self._mac(nonce))

    def check_token(self, offered: str | None) -> bool:
        return bool(self.token) and _same(offered or "", self.token or "")

    def _mac(self, nonce: str) -> str:
        return hmac.new((self.token or "").encode(), nonce.encode(), hashlib.sha256).hexdigest()


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, field: str | None) -> bool:
    return bool(cookie and field) and _same(cookie or "", field or "")


def same_origin(origin: str | None, host_url: str) -> bool:
    """No ``Origin`` (an old browser, curl) passes; a present one must name this host.
    The scheme is not compared: behind a proxy that ends TLS the app sees ``http``
    while the browser says ``https``."""
    if not origin:
        return True
    return urlsplit(host_url).netloc.lower() == urlsplit(origin).netloc.lower()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
