"""Reads what the audit needs while a chaos run goes on, straight from Redis.

History streams are capped (``MAXLEN ~ 100``), so a 10-minute run would lose its
early entries: the collector reads every stream incrementally, about once a second,
and notes a *gap* if a stream was trimmed past what it had read. It also reads the
runs the jobs recorded (a file: see :mod:`devtools.chaos.jobs`), and plays the
operator of ``pause_on_failure`` schedules: it resumes one a few seconds after a
failure paused it, as a person would. Redis being down (the driver kills it) only
delays a round. Redis losing its data (the driver wipes it) is noticed by a marker
key the collector keeps: gone means every stream started again, so they are read
from their start with what was read before kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis.exceptions
from redis import Redis

from devtools.chaos.audit import Entry, FinalState
from devtools.chaos.jobs import RunRecord
from scheduler import Client
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.connection import connect
from scheduler.errors import RedisFull, ScheduleNotFound
from scheduler.keys import Keys
from scheduler.records import text

log = logging.getLogger(__name__)

POLL_S = 1.0
#: Set by the collector, gone after Redis lost its data: then streams restart.
MARKER_KEY = "chaos:collector"
_TIME_FIELDS = {"fire_at": "fire_ms", "next_fire_at": "next_fire_ms"}


def to_entry(entry_id: str, raw: dict[str, str]) -> Entry:
    """A history entry for the audit: ISO times also as ``*_ms``; ``at_ms`` is the
    decision time the entry carries (``at``), else the stream id's time."""
    fields = dict(raw)
    for iso_name, ms_name in _TIME_FIELDS.items():
        if fields.get(iso_name):
            fields[ms_name] = str(parse_iso_ms(fields[iso_name]))
    at_ms = parse_iso_ms(fields["at"]) if fields.get("at") else int(entry_id.split("-", 1)[0])
    return Entry(at_ms, fields.pop("event", "?"), fields)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Collector:
    """Incremental reader of histories and run records; a daemon thread once started."""

    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        ids: Iterable[str],
        runs_file: Path,
        *,
        resume: Iterable[str] = (),
        resume_after_s: float = 3.0,
    ) -> None:
        self.conn: Redis = connect(redis_url, socket_timeout_s=5.0)
        self.keys = keys
        self.ids = list(ids)
        self.history: dict[str, list[Entry]] = {sid: [] for sid in self.ids}
        self.runs: list[RunRecord] = []
        self.runs_file = runs_file
        self._runs_offset = 0
        self.wipes_seen = 0
        self.gaps: list[str] = []
        self.errors = 0
        self.resumes = 0
        self._last: dict[str, str] = {}
        self._resumable = set(resume)
        self._resume_at: dict[str, float] = {}
        self.resume_after_s = resume_after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-collector", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except (redis.exceptions.RedisError, OSError) as exc:
                self.errors += 1
                log.debug("collector round failed: %s", exc)
            self._stop.wait(POLL_S)

    def poll(self) -> None:
        """One round: new run records, new history entries, due resumes."""
        self._read_runs()
        pipe = self.conn.pipeline(transaction=False)
        pipe.exists(MARKER_KEY)
        for sid in self.ids:
            last = self._last.get(sid)
            pipe.xrange(self.keys.history(sid), f"({last}" if last else "-", "+")
            pipe.xrange(self.keys.history(sid), "-", "+", count=1)
        replies: list[Any] = pipe.execute()
        if not replies[0]:
            if self._last:  # not the first round: Redis lost its data; next round from the start
                self.wipes_seen += 1
                self._last.clear()
                log.warning("collector: Redis lost the history streams; reading them again from the start")
            self.conn.set(MARKER_KEY, "1")
            return
        for i, sid in enumerate(self.ids):
            self._take(sid, replies[1 + 2 * i], replies[2 + 2 * i])
        self._resume_due()

    def _read_runs(self) -> None:
        """The complete lines appended to the runs file since the last read."""
        try:
            with self.runs_file.open("rb") as f:
                f.seek(self._runs_offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._runs_offset += len(complete)
        self.runs += [RunRecord.from_json(line) for line in complete.splitlines() if line]

    def _take(self, sid: str, new: list[Any], first: list[Any]) -> None:
        last = self._last.get(sid)
        if last and first and _id_key(str(text(first[0][0]))) > _id_key(last):
            self.gaps.append(f"{sid} after {last}")
        for entry_id, raw in new:
            eid = str(text(entry_id))
            entry = to_entry(eid, {str(text(k)): str(text(v)) for k, v in raw.items()})
            self.history[sid].append(entry)
            self._last[sid] = eid
            if sid in self._resumable and entry.event == "failed" and entry.fields.get("retry_at") == "":
                self._resume_at[sid] = time.monotonic() + self.resume_after_s

    def _resume_due(self) -> None:
        now = time.monotonic()
        client = Client(self.conn, self.keys.namespace)
        for sid, at in list(self._resume_at.items()):
            if at > now:
                continue
            try:
                client.resume(sid)  # a RedisError leaves it for the next round
            except RedisFull:
                continue  # refused whole: try again next round, as a person would
            except ScheduleNotFound:  # gone with Redis's data: the re-apply brings it back unpaused
                log.info("collector: %s vanished before its resume", sid)
            else:
                self.resumes += 1
            del self._resume_at[sid]

    def finals(self) -> dict[str, FinalState]:
        """Every schedule's state now, for the stuck check."""
        out = {}
        for record in Client(self.conn, self.keys.namespace).list():
            dispatched = record.raw.get("dispatched_at")
            out[record.id] = FinalState(
                record.state,
                due_ms=record.due_ms,
                dispatched_ms=parse_iso_ms(dispatched) if dispatched else None,
            )
        return out

    def now_ms(self) -> int:
        return redis_now_ms(self.conn)

    def close(self) -> None:
        self.conn.close()
