"""Where Redis is: one frozen settings object for every process rqbeat starts.

The scheduler service, the worker and every CLI command build their client from a
:class:`RedisSettings`, so Sentinel, TLS and ACL credentials work the same
everywhere. Clients never retry commands (see :mod:`scheduler.connection`).

With Sentinel, ``url`` still supplies the credentials, the database and the scheme
(``rediss://`` = TLS, to the master and to the sentinels); its host and port are
ignored: the sentinels name the master. redis-py's ``SentinelConnectionPool`` asks
the sentinels for the master's address on every new connection and drops its
connections when a command meets a demoted master (READONLY), and Sentinel itself
disconnects the clients of a demoted master, so a failover costs one failed step
(the loops retry whole steps) and the next connection goes to the new master.

With a Redis Cluster (``redis+cluster://host:port,...``), the URL names seed nodes;
the client is a plain one to the primary serving the namespace's slot
(:mod:`scheduler.slotowner`), after :func:`scheduler.slots.check` has made sure that
rqbeat's keys and RQ's share that slot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.sentinel import Sentinel

from scheduler import rqkeys, slots
from scheduler.connection import DEFAULT_REDIS_URL, DEFAULT_SOCKET_TIMEOUT_S, client_options, mask_url
from scheduler.errors import ConfigError
from scheduler.keys import DEFAULT_NAMESPACE
from scheduler.slotguard import guard_key
from scheduler.slotowner import slot_client

_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    """Redis location and credentials (global flags / ``RQBEAT_*`` variables).

    Validated on construction (:class:`ConfigError`, a ``ValueError``); ``repr`` and
    :meth:`describe` never show a password.
    """

    url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    tls_ca_cert: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if self.cluster:
            slots.parse_cluster_url(self.url)
            if self.sentinels:
                raise ConfigError(
                    "--sentinel", "", "a Redis Cluster URL (redis+cluster://) takes no Sentinel"
                )
        else:
            _check_url(self.url, need_host=not self.sentinels)
        if bool(self.sentinels) != bool(self.sentinel_master):
            missing = "--sentinel-master" if self.sentinels else "--sentinel"
            raise ConfigError(missing, "", "--sentinel and --sentinel-master go together")
        if self.sentinels and self.scheme == "unix":
            raise ConfigError("--redis-url", mask_url(self.url), "Sentinel needs a redis:// or rediss:// URL")
        self._check_tls()

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def cluster(self) -> bool:
        """A Redis Cluster: ``redis+cluster://`` or ``rediss+cluster://``."""
        return slots.is_cluster_url(self.url)

    @property
    def tls(self) -> bool:
        return self.scheme in ("rediss", "rediss+cluster")

    def secrets(self) -> tuple[str, ...]:
        """Every password these settings hold (as written and URL-decoded), for masking."""
        raw = (
            slots.parse_cluster_url(self.url).password if self.cluster else urlsplit(self.url).password
        ) or ""
        return tuple(s for s in {raw, unquote(raw), self.sentinel_password or ""} if s)

    def describe(self) -> str:
        """Where Redis is, without passwords: for logs and error messages."""
        where = mask_url(self.url)
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            where = f"sentinel {self.sentinel_master}@{hosts} ({where})"
        return where

    def connect(
        self, *, socket_timeout_s: float | None = DEFAULT_SOCKET_TIMEOUT_S, namespace: str = DEFAULT_NAMESPACE
    ) -> Redis:
        """A client without command retries; with Sentinel, one that follows the master;
        with a Redis Cluster, one that follows the primary serving ``namespace``'s slot
        (:class:`ConfigError` when RQ's keys would lie in another slot)."""
        options = {**client_options(socket_timeout_s), **self._tls_options()}
        if self.cluster:
            plan = slots.check(namespace, rqkeys.PREFIX, rqkeys.RQ_VERSION)
            return slot_client(slots.parse_cluster_url(self.url), plan.slot, options, guard_key(namespace))
        if not self.sentinels:
            return Redis.from_url(self.url, **options)
        parts = urlsplit(self.url)
        sentinel_options = {**client_options(socket_timeout_s), **self._tls_options()}
        if self.sentinel_password is not None:
            sentinel_options |= {"username": self.sentinel_username, "password": self.sentinel_password}
        if self.tls:
            sentinel_options["ssl"] = True
        sentinel = _Sentinel(self.sentinels, sentinel_options)
        master: Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            self.sentinel_master,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            db=_db(parts.path),
            ssl=self.tls,
            **options,
        )
        return master

    def _tls_options(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        options: dict[str, Any] = {"ssl_cert_reqs": "required"}
        if self.tls_ca_cert:
            options["ssl_ca_certs"] = self.tls_ca_cert
        if self.tls_cert:
            options["ssl_certfile"] = self.tls_cert
        if self.tls_key:
            options["ssl_keyfile"] = self.tls_key
        return options

    def _check_tls(self) -> None:
        files = {"--tls-ca-cert": self.tls_ca_cert, "--tls-cert": self.tls_cert, "--tls-key": self.tls_key}
        for flag, path in files.items():
            if path is None:
                continue
            if not self.tls:
                raise ConfigError(flag, path, "TLS files need a rediss:// URL")
            if not os.access(path, os.R_OK) or not os.path.isfile(path):
                raise ConfigError(flag, path, "no such readable file")
        if self.tls_key and not self.tls_cert:
            raise ConfigError("--tls-key", self.tls_key, "needs --tls-cert (the client certificate)")


class _SentinelNode(Redis):
    """A client of one Sentinel whose repr is its address: redis-py quotes it in
    ``MasterNotFoundError``, which otherwise runs to a screenful of pool settings."""

    def __repr__(self) -> str:
        kwargs = self.connection_pool.connection_kwargs
        return f"sentinel {kwargs.get('host')}:{kwargs.get('port')}"


class _Sentinel(Sentinel):
    def __init__(self, addresses: tuple[tuple[str, int], ...], options: dict[str, Any]) -> None:
        super().__init__([], sentinel_kwargs=options)  # type: ignore[no-untyped-call]
        self.sentinels = [_SentinelNode(host, port, **options) for host, port in addresses]


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (``[::1]:26379`` for IPv6) as address pairs."""
    addresses = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("--sentinel", text, f"{item!r} is not host:port")
        addresses.append((host, int(port)))
    if not addresses:
        raise ConfigError("--sentinel", text, "give at least one host:port")
    return tuple(addresses)


def _check_url(url: str, *, need_host: bool) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError("--redis-url", mask_url(url), str(exc)) from None
    if parts.scheme not in _SCHEMES:
        raise ConfigError("--redis-url", mask_url(url), "must start with redis://, rediss:// or unix://")
    if parts.scheme != "unix" and need_host and not parts.hostname:
        raise ConfigError("--redis-url", mask_url(url), "has no host")
    if parts.scheme != "unix":
        _db(parts.path, url)


def _db(path: str, url: str = "") -> int:
    number = path.strip("/") or "0"
    if not number.isdigit():
        raise ConfigError("--redis-url", mask_url(url), f"database {number!r} is not a number")
    return int(number)
