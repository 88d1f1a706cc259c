"""Redis Cluster: where a namespace's keys live, and whether RQ's live there too.

A Redis Cluster runs a multi-key script only when every key it touches hashes to one
slot. rqbeat's transitions are such scripts, and dispatch writes RQ's job hash and
queue list in the same script as rqbeat's own keys (one atomic step: "moved to
running" and "enqueued" cannot come apart). So on a cluster every key of one
installation must hash to one slot:

- rqbeat's keys are all ``<namespace>:...``: a namespace with a hash tag, ``{rqbeat}``
  or ``app:{beat}``, puts them in the slot of the tag;
- RQ's keys are all ``<RQ_KEY_PREFIX>:...`` (RQ 3 reads the prefix from the
  environment; RQ 2.12 always uses ``rq``): ``RQ_KEY_PREFIX={rqbeat}:rq`` puts them
  in the same slot.

:func:`check` says so before anything connects, with the setting to change; pure (no
Redis), so every command, replica and worker refuses the same way at start.

A Redis Cluster URL is ``redis+cluster://[user:password@]host:port[,host:port...][/0]``
(``rediss+cluster://`` with TLS): the seed nodes to ask which primary serves the slot
(:mod:`scheduler.slotowner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from redis.crc import key_slot

from scheduler.connection import mask_url
from scheduler.errors import ConfigError

#: URL schemes of a Redis Cluster, and the plain scheme each connects its nodes with.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def hash_tag(name: str) -> str | None:
    """The hash tag Redis Cluster would hash for every key that starts with
    ``name``: the text between the first ``{`` and the first ``}`` after it, when
    both are in ``name`` and the text is not empty. None otherwise."""
    start = name.find("{")
    end = name.find("}", start + 1) if start >= 0 else -1
    if start < 0 or end < 0 or end == start + 1:
        return None
    return name[start + 1 : end]


def slot_of(key: str) -> int:
    """The cluster slot (0..16383) of ``key``, as Redis computes it (CRC16 of the
    hash tag, or of the whole key without one)."""
    return int(key_slot(key.encode()))


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """The one slot an installation's keys hash to, with the names that decided it."""

    slot: int
    namespace: str
    rq_prefix: str


def check(namespace: str, rq_prefix: str, rq_version: str) -> SlotPlan:
    """The slot of every key of ``namespace`` and of RQ under ``rq_prefix``, or
    :class:`ConfigError` naming the setting to change when they would not all be in
    one slot. ``rq_version``: RQ 2 has no key prefix at all."""
    if int(rq_version.split(".", maxsplit=1)[0]) < 3:
        raise ConfigError(
            "RQ_KEY_PREFIX",
            rq_prefix,
            f"a Redis Cluster needs RQ 3 (installed: RQ {rq_version}, whose keys are always rq:..., "
            "outside the namespace's slot); install rq>=3 and set RQ_KEY_PREFIX, e.g. "
            f"RQ_KEY_PREFIX={_suggested_prefix(namespace)}",
        )
    tag = hash_tag(namespace)
    if tag is None:
        raise ConfigError(
            "--namespace",
            namespace,
            "on a Redis Cluster the namespace needs a hash tag so all its keys share one slot, "
            f"e.g. --namespace '{{{namespace.strip('{}') or 'rqbeat'}}}'",
        )
    slot = slot_of(f"{namespace}:due")
    if hash_tag(rq_prefix) is None:
        where = "spread over many slots (no hash tag)"
    elif (rq_slot := slot_of(f"{rq_prefix}:queue:default")) != slot:
        where = f"lie in slot {rq_slot}"
    else:
        return SlotPlan(slot, namespace, rq_prefix)
    raise ConfigError(
        "RQ_KEY_PREFIX",
        rq_prefix,
        f"RQ's keys ({rq_prefix}:job:...) {where} instead of slot {slot} of namespace {namespace!r}: "
        f"dispatch writes both in one script; set RQ_KEY_PREFIX={_suggested_prefix(namespace)} "
        "for every replica and worker",
    )


def _suggested_prefix(namespace: str) -> str:
    tag = hash_tag(namespace)
    return f"{{{tag}}}:rq" if tag else "{rqbeat}:rq"


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """A parsed ``redis+cluster://`` URL: seed nodes and what every node connection gets."""

    seeds: tuple[tuple[str, int], ...]
    tls: bool
    username: str | None
    password: str | None


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """The seeds and credentials of a ``redis+cluster://`` URL; :class:`ConfigError`
    naming ``--redis-url`` (password masked) when it is malformed."""
    scheme, _, rest = url.partition("://")
    if scheme not in CLUSTER_SCHEMES:
        raise _bad(url, "must start with redis+cluster:// or rediss+cluster://")
    netloc, _, path = rest.partition("/")
    if path.split("?", 1)[0].strip("/") not in ("", "0"):
        raise _bad(url, "a Redis Cluster has only database 0")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    seeds = tuple(_seed(url, item) for item in hosts.split(",") if item.strip())
    if not seeds:
        raise _bad(url, "names no seed node (host:port)")
    return ClusterUrl(seeds, CLUSTER_SCHEMES[scheme] == "rediss", username, password)


def _seed(url: str, item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(url, f"{item.strip()!r} is not host:port")
    return host, int(port)


def _bad(url: str, reason: str) -> ConfigError:
    return ConfigError("--redis-url", mask_url(url), reason)
