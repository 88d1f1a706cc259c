"""``job.meta["rqbeat"]``: the one definition of what an RQ job carries about its fire.

Dispatch writes it (:mod:`scheduler.engine.dispatch`); the worker's ack and nudge
(:mod:`workers.worker`) and :func:`workers.current_fire` read it. The layout is JSON
inside RQ's job hash, so a job enqueued by one rqbeat version is read by the next:
add fields with a default in :meth:`FireMeta.from_dict`, never rename one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.errors import CorruptJobMeta
from scheduler.keys import DEFAULT_NAMESPACE

#: The key of ``job.meta`` rqbeat owns.
META_KEY = "rqbeat"


@dataclass(frozen=True, slots=True, kw_only=True)
class FireMeta:
    """Which schedule, fire and try a job runs, and who dispatched it."""

    schedule: str
    fire_at: str  # ISO UTC, as history and logs show it
    fire_ms: int
    attempt: int
    epoch: int  # of the leader that dispatched it
    version: str  # of the definition the job was built from
    namespace: str = DEFAULT_NAMESPACE
    #: run by a backfill (``rqbeat backfill``), not by the schedule's live firing
    backfill: bool = False
    #: one of several runs of an ``overlap = allow_all`` schedule (its own record)
    concurrent: bool = False

    @property
    def key(self) -> str:
        """``<schedule>:<fire epoch ms>``: the same for every attempt and duplicate of
        one fire, so job code can make its side effects idempotent. A backfill's run
        of a fire has its own, ``<schedule>:<fire epoch ms>:backfill``: a forced
        backfill of a fire that ran live is a second run the job code can tell apart."""
        live = f"{self.schedule}:{self.fire_ms}"
        return f"{live}:backfill" if self.backfill else live

    def to_meta(self) -> dict[str, Any]:
        """The ``job.meta`` to enqueue the job with."""
        return {
            META_KEY: {
                "schedule": self.schedule,
                "fire_at": self.fire_at,
                "fire_ms": self.fire_ms,
                "attempt": self.attempt,
                "key": self.key,
                "epoch": self.epoch,
                "version": self.version,
                "namespace": self.namespace,
                **({"backfill": True} if self.backfill else {}),
                **({"concurrent": True} if self.concurrent else {}),
            }
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> FireMeta | None:
        """The fire of a job's whole ``meta``; None for a job rqbeat did not enqueue
        (no object under :data:`META_KEY`). Raises :class:`CorruptJobMeta` when
        rqbeat's object lacks a field or holds a bad value."""
        raw = meta.get(META_KEY) if meta else None
        return cls.from_dict(raw) if isinstance(raw, Mapping) else None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FireMeta:
        """rqbeat's part of ``meta``; raises :class:`CorruptJobMeta`."""
        try:
            return cls(
                schedule=str(raw["schedule"]),
                fire_at=str(raw["fire_at"]),
                fire_ms=int(raw["fire_ms"]),
                attempt=int(raw["attempt"]),
                epoch=int(raw["epoch"]),
                version=str(raw.get("version", "")),
                namespace=str(raw.get("namespace", DEFAULT_NAMESPACE)),
                backfill=bool(raw.get("backfill", False)),
                concurrent=bool(raw.get("concurrent", False)),
            )
        except KeyError as exc:
            raise CorruptJobMeta(f"meta[{META_KEY!r}] has no {exc}") from None
        except (TypeError, ValueError) as exc:
            raise CorruptJobMeta(f"meta[{META_KEY!r}] has a bad value: {exc}") from None
