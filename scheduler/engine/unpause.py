"""Time-limited pauses end by themselves: the leader resumes each schedule whose
``until`` has come (``rqbeat pause ID --until ...``).

A pause with an until puts the schedule in ``<ns>:paused_until``, scored by the until.
The leader reads the first entry of that zset in the pipeline it already sends to plan
its wait (no extra round trip, no polling loop): the until is one more score the wait
can end at. When one has come, :meth:`Unpauser.resume_due` resumes it through the same
script as ``rqbeat resume``, fenced by the lease token, recorded as resumed by
``rqbeat (until)``.
"""

from __future__ import annotations

import logging

from redis import Redis

from scheduler.errors import LeadershipLost, RqbeatError, ScheduleNotFound
from scheduler.keys import Keys
from scheduler.protocol import ResumeReply
from scheduler.records import text
from scheduler.store import Client

log = logging.getLogger(__name__)

#: Pauses ended per pass; more come in the next pass, right after.
BATCH = 100


class Unpauser:
    """Resumes the schedules whose pause has run out, on the leader."""

    def __init__(self, conn: Redis, keys: Keys) -> None:
        self.conn = conn
        self.keys = keys
        self.client = Client(conn, keys.namespace)

    def resume_due(self, now_ms: int, token: str) -> int:
        """Resume up to :data:`BATCH` schedules whose until is at or before ``now_ms``;
        returns how many were looked at. Raises ``LeadershipLost`` when the lease is
        no longer ``token``'s (nothing written)."""
        key = self.keys.paused_until
        ids: list[bytes] = self.conn.zrangebyscore(key, "-inf", now_ms / 1000, start=0, num=BATCH)  # type: ignore[assignment]
        for raw in ids:
            schedule_id = str(text(raw))
            reply = self._resume(schedule_id, token)
            if reply is ResumeReply.DEPOSED:
                raise LeadershipLost("lease lost while ending a pause")
            if reply is ResumeReply.RESUMED:
                log.info("schedule=%s resumed: its pause ran out", schedule_id)
        return len(ids)

    def _resume(self, schedule_id: str, token: str) -> ResumeReply | None:
        try:
            return self.client.resume_at_until(schedule_id, token=token)
        except ScheduleNotFound:  # removed by hand: the script was not reached
            self.conn.zrem(self.keys.paused_until, schedule_id)
        except RqbeatError as exc:  # broken: it stays paused until its definition is fixed
            log.warning("schedule=%s pause ran out but cannot resume: %s", schedule_id, exc)
            self.conn.zrem(self.keys.paused_until, schedule_id)
        return None
