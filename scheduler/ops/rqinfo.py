"""Which RQ the replicas and the workers run, and where they disagree.

Replicas record their RQ version and key prefix in their node hash (``<ns>:node:*``),
``workers.Worker`` in ``<ns>:rq-workers`` (workers.presence). A replica and a worker
under different key prefixes (RQ 3's ``RQ_KEY_PREFIX`` set on one side only) never
meet: the replica's jobs wait in a queue the worker does not read. Different RQ
releases work together (rqbeat writes the same job either way) but are worth knowing
about. Stock ``rq worker``s record nothing and are not listed here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from redis import Redis

from scheduler.keys import Keys
from scheduler.records import text
from scheduler.rqkeys import RqIdentity, ignored_prefix

#: A worker's record in ``<ns>:rq-workers`` is live while RQ's worker hash exists
#: without this field (RQ sets it when the worker stops, then lets the hash expire).
_DEATH_FIELD = "death"


@dataclass(frozen=True, slots=True)
class RqWorker:
    """A live ``workers.Worker`` as it recorded itself."""

    name: str
    queues: tuple[str, ...]
    rq: RqIdentity


def read_workers(conn: Redis, keys: Keys) -> list[RqWorker]:
    """The live ``workers.Worker``s of every key prefix, by name. Read only."""
    records = {str(text(k)): text(v) for k, v in conn.hgetall(keys.rq_workers).items()}
    pipe = conn.pipeline(transaction=False)
    for worker_key in records:
        pipe.exists(worker_key)
        pipe.hexists(worker_key, _DEATH_FIELD)
    replies = iter(pipe.execute())
    out = []
    for raw in records.values():
        exists, dead = next(replies), next(replies)
        worker = _decode(raw) if exists and not dead else None
        if worker is not None:
            out.append(worker)
    return sorted(out, key=lambda w: w.name)


def _decode(raw: str | None) -> RqWorker | None:
    try:
        data = json.loads(raw or "")
    except ValueError:
        return None
    rq = RqIdentity.of(data) if isinstance(data, dict) else None
    if rq is None:
        return None
    queues = data.get("queues")
    names = tuple(map(str, queues)) if isinstance(queues, list) else ()
    return RqWorker(str(data.get("name", "?")), names, rq)


def disagreements(
    here: RqIdentity, replicas: Mapping[str, RqIdentity | None], workers: Iterable[RqWorker]
) -> list[str]:
    """Pure: a warning per replica whose RQ key prefix or version differs from some
    workers', per replica whose prefix differs from this process's (then what this
    process shows of RQ's queues is another prefix's), and for an ``RQ_KEY_PREFIX``
    this RQ ignores."""
    out = []
    ignored = ignored_prefix()
    if ignored:
        out.append(f"RQ_KEY_PREFIX={ignored} is set, but RQ {here.version} has no such setting (uses 'rq')")
    groups: dict[RqIdentity, list[str]] = {}
    for w in workers:
        groups.setdefault(w.rq, []).append(w.name)
    for node, rq in sorted(replicas.items()):
        if rq is None:
            continue
        if rq.prefix != here.prefix:
            out.append(
                f"replica {node} uses RQ key prefix {rq.prefix!r}, this rqbeat {here.prefix!r}: "
                f"run it with RQ_KEY_PREFIX={rq.prefix}"
            )
        for theirs, names in sorted(groups.items(), key=lambda g: (g[0].prefix, g[0].version)):
            who = f"worker{'s' if len(names) > 1 else ''} {', '.join(names)}"
            if theirs.prefix != rq.prefix:
                out.append(
                    f"replica {node} uses RQ key prefix {rq.prefix!r} but {who} {theirs.prefix!r}: "
                    "they never see its jobs"
                )
            elif theirs.version != rq.version:
                out.append(f"replica {node} runs RQ {rq.version} but {who} RQ {theirs.version}")
    return out
