"""The schedule store: create, change, remove, pause, resume, trigger, read.

Every write is one Lua script (:mod:`scheduler.scripts`) that checks what it
depends on, so concurrent CLI/API callers and the running leader cannot interleave
into a half-written schedule. Writes validate first: an invalid schedule never
reaches Redis.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.exceptions
from redis import Redis

from scheduler import cron, policy, scripts
from scheduler.allow import AllowList
from scheduler.clock import iso, redis_now_ms
from scheduler.errors import RedisFull, RqbeatError, ScheduleNotFound
from scheduler.keys import DEFAULT_NAMESPACE, HISTORY_MAXLEN, Keys
from scheduler.memory import full_is_error, read_memory
from scheduler.model import Schedule
from scheduler.records import ScheduleRecord, decode_definition, decode_record, text

_TRIGGER_FIELDS = ("cron", "every_ms", "timezone", "jitter_ms")
#: Schedules per upsert script call: one round trip each way, Redis busy ~ms.
UPSERT_CHUNK = 1_000
#: What one stored schedule costs Redis beyond twice its definition's JSON (hash
#: fields, the due zset and the id set entries), for the headroom check of a
#: multi-chunk upsert. Generous on purpose: refusing early beats a half-written apply.
SCHEDULE_OVERHEAD_BYTES = 512


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What an upsert did: ``created``, ``updated`` (version + 1) or ``unchanged``."""

    id: str
    action: Literal["created", "updated", "unchanged"]
    version: int


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a schedule's history stream."""

    entry_id: str
    at_ms: int
    event: str
    fields: dict[str, str]


class ScheduleConflict(RqbeatError):
    """A schedule kept changing under an upsert (another writer); try again."""


class Client:
    """Manage schedules in Redis. Thread-safe as far as the redis client is."""

    def __init__(
        self,
        conn: Redis,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        history_maxlen: int = HISTORY_MAXLEN,
        allow: AllowList | None = None,
    ) -> None:
        self.conn = conn
        self.allow = allow  # refuses targets outside it on write (scheduler.allow)
        self.keys = Keys(namespace)
        self.history_maxlen = history_maxlen
        self._scripts = scripts.Scripts(conn)

    # -- writes -------------------------------------------------------------------

    def upsert(self, schedule: Schedule) -> UpsertResult:
        """Create or replace a schedule. A new schedule, or a changed trigger, gets its
        next fire computed from now (Redis time); other changes keep the pending fire."""
        return self.upsert_many([schedule])[0]

    def upsert_many(self, schedules: Sequence[Schedule]) -> builtins.list[UpsertResult]:
        """Upsert several schedules with pipelined round trips (``rqbeat apply``)."""
        if self.allow is not None:
            for schedule in schedules:  # all checked before anything is written
                self.allow.check(schedule.target)
        what = (
            f"writing schedule {schedules[0].id!r}"
            if len(schedules) == 1
            else f"writing {len(schedules)} schedules"
        )
        if len(schedules) > UPSERT_CHUNK:  # one chunk is one script: all or nothing anyway
            self._check_headroom(schedules, what)
        results: dict[str, UpsertResult] = {}
        pending = list(schedules)
        try:
            for _ in range(5):
                pending = self._upsert_round(pending, results)
                if not pending:
                    return [results[s.id] for s in schedules]
        except redis.exceptions.OutOfMemoryError as exc:
            # Each chunk is one script, refused whole; the chunks before it stand. An
            # upsert of the same schedules again writes only the rest (the written
            # ones read back unchanged), so a re-run converges.
            written = sum(r.action != "unchanged" for r in results.values())
            done = f"{written} schedule(s) of it were written before (re-running writes the rest)"
            raise RedisFull(what, done if written else "nothing was written") from exc
        raise ScheduleConflict(f"schedule {pending[0].id!r} kept changing during the upsert")

    def remove(self, schedule_id: str) -> bool:
        """Delete a schedule and its history. Returns False if there was none."""
        k = self.keys
        keys = [
            k.schedule(schedule_id),
            k.history(schedule_id),
            k.due,
            k.running,
            k.ids,
            k.revision,
            k.events,
        ]
        with full_is_error(f"removing schedule {schedule_id!r}"):
            return bool(scripts.run(self._scripts.remove, keys, [schedule_id]) == 1)

    def pause(self, schedule_id: str) -> bool:
        """Stop firing (a run in flight finishes). False if it was already paused."""
        k = self.keys
        now = redis_now_ms(self.conn)
        keys = [k.schedule(schedule_id), k.due, k.revision, k.events, k.history(schedule_id)]
        with full_is_error(f"pausing schedule {schedule_id!r}"):
            result = scripts.run(self._scripts.pause, keys, [schedule_id, iso(now), self.history_maxlen])
        return self._changed(schedule_id, result)

    def resume(self, schedule_id: str) -> bool:
        """Fire again from now on (missed fires while paused are not run). False if it
        was not paused."""
        record = self.get(schedule_id)
        if record.schedule is None:
            raise RqbeatError(
                f"schedule {schedule_id!r} is broken ({record.error}); apply a valid definition"
            )
        now = redis_now_ms(self.conn)
        fire = cron.next_fire_ms(record.schedule.trigger, now)
        score = policy.due_score_ms(record.schedule, fire)
        k = self.keys
        keys = [k.schedule(schedule_id), k.due, k.revision, k.events, k.history(schedule_id)]
        args = [schedule_id, iso(fire), score / 1000, iso(now), self.history_maxlen]
        with full_is_error(f"resuming schedule {schedule_id!r}"):
            result = scripts.run(self._scripts.resume, keys, args)
        return self._changed(schedule_id, result)

    def trigger(self, schedule_id: str) -> None:
        """Run the schedule now, once; its regular fires carry on afterwards."""
        now = redis_now_ms(self.conn)
        k = self.keys
        keys = [k.schedule(schedule_id), k.due, k.revision, k.events, k.history(schedule_id)]
        with full_is_error(f"triggering schedule {schedule_id!r}"):
            result = scripts.run(
                self._scripts.trigger, keys, [schedule_id, iso(now), now / 1000, self.history_maxlen]
            )
        if result == -1:
            raise ScheduleNotFound(schedule_id)
        if result != 1:
            raise RqbeatError(
                f"schedule {schedule_id!r} is {text(result)!s}; only a due schedule can be triggered"
            )

    # -- reads --------------------------------------------------------------------

    def get(self, schedule_id: str) -> ScheduleRecord:
        """One schedule with its state; raises :class:`ScheduleNotFound`."""
        records = self._read([schedule_id])
        if not records:
            raise ScheduleNotFound(schedule_id)
        return records[0]

    def ids(self) -> builtins.list[str]:
        """Every schedule id, sorted."""
        return sorted(str(text(m)) for m in self.conn.smembers(self.keys.ids))

    def list(self) -> builtins.list[ScheduleRecord]:
        """Every schedule, sorted by id (reads the id set, never scans the keyspace)."""
        return self._read(self.ids())

    def stored(self, ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """(definition text, state) of each of ``ids`` that exists, without decoding:
        what ``rqbeat apply`` compares the file with. One script call per chunk."""
        out: dict[str, tuple[str | None, str | None]] = {}
        prefix = self.keys.schedule("")
        for start in range(0, len(ids), UPSERT_CHUNK):
            chunk = ids[start : start + UPSERT_CHUNK]
            reply = scripts.run(self._scripts.upsert_read, [], [prefix, *chunk])
            for i, schedule_id in enumerate(chunk):
                version, definition, state = reply[3 * i : 3 * i + 3]
                if version is not None or definition is not None or state is not None:
                    out[schedule_id] = (text(definition), text(state))
        return out

    def history(self, schedule_id: str, count: int = 20) -> builtins.list[HistoryEntry]:
        """The newest ``count`` history entries, oldest first."""
        entries: Any = self.conn.xrevrange(self.keys.history(schedule_id), count=count)
        out = []
        for entry_id, raw in reversed(entries):
            eid = str(text(entry_id))
            fields = {str(text(a)): str(text(b)) for a, b in raw.items()}
            out.append(
                HistoryEntry(eid, int(eid.split("-", maxsplit=1)[0]), fields.pop("event", "?"), fields)
            )
        return out

    # -- internals ----------------------------------------------------------------

    def _read(self, ids: Iterable[str]) -> builtins.list[ScheduleRecord]:
        ids = list(ids)
        pipe = self.conn.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.type(self.keys.schedule(schedule_id))
            pipe.zscore(self.keys.due, schedule_id)
        replies = pipe.execute()
        pipe = self.conn.pipeline(transaction=False)
        for schedule_id, key_type in zip(ids, replies[::2], strict=True):
            if text(key_type) == "hash":
                pipe.hgetall(self.keys.schedule(schedule_id))
        hashes = iter(pipe.execute())
        records = []
        for schedule_id, key_type, score in zip(ids, replies[::2], replies[1::2], strict=True):
            kind = text(key_type)
            if kind == "none":
                continue
            raw = next(hashes) if kind == "hash" else {"error": f"key has type {kind}, not hash"}
            due_ms = round(float(score) * 1000) if score is not None else None
            records.append(decode_record(schedule_id, raw, due_ms))
        return records

    def _upsert_round(
        self, schedules: Sequence[Schedule], results: dict[str, UpsertResult]
    ) -> builtins.list[Schedule]:
        """One read-compute-write pass, chunk by chunk, each chunk computed while Redis
        writes the last; returns the schedules that lost a race (an edit between the
        read and the write)."""
        lost: builtins.list[Schedule] = []

        def chunks() -> Iterator[tuple[builtins.list[Schedule], builtins.list[Any] | None]]:
            for start in range(0, len(schedules), UPSERT_CHUNK):
                writes, args = self._prepare(schedules[start : start + UPSERT_CHUNK], results)
                yield writes, args if writes else None

        def settle(writes: builtins.list[Schedule], versions: Any) -> bool:
            for schedule, version in zip(writes, versions or [], strict=True):
                if version == -1:
                    lost.append(schedule)
                else:
                    action: Literal["created", "updated"] = "created" if version == 1 else "updated"
                    results[schedule.id] = UpsertResult(schedule.id, action, int(version))
            return True

        k = self.keys
        keys = [k.due, k.ids, k.revision, k.events]
        scripts.pipelined(self.conn, self._scripts.upsert, keys, chunks(), settle)
        return lost

    def _prepare(
        self, schedules: Sequence[Schedule], results: dict[str, UpsertResult]
    ) -> tuple[builtins.list[Schedule], builtins.list[Any]]:
        """Read a chunk's current versions and build the upsert's arguments for the
        schedules that changed (the unchanged go straight to ``results``)."""
        prefix = self.keys.schedule("")
        reply = scripts.run(self._scripts.upsert_read, [], [prefix, *(s.id for s in schedules)])
        now = redis_now_ms(self.conn)
        args: builtins.list[Any] = [prefix, iso(now)]
        writes: builtins.list[Schedule] = []
        for i, schedule in enumerate(schedules):
            version, definition, state = reply[3 * i : 3 * i + 3]
            new_json = schedule.to_json()
            if definition is not None and text(definition) == new_json and text(state) != "broken":
                results[schedule.id] = UpsertResult(schedule.id, "unchanged", int(version))
                continue
            old = _old_definition(schedule.id, definition)
            refire = old is None or text(state) == "broken" or _trigger_changed(old, schedule)
            fire = cron.next_fire_ms(schedule.trigger, now) if refire else None
            args += [schedule.id, new_json, int(version or 0)]
            args += [iso(fire), policy.due_score_ms(schedule, fire) / 1000] if fire is not None else ["", 0]
            writes.append(schedule)
        return writes, args

    def _check_headroom(self, schedules: Sequence[Schedule], what: str) -> None:
        """Refuse up front an upsert that cannot fit under maxmemory, so that it is not
        cut off between chunks. Unknown memory (INFO refused) is not a refusal."""
        memory = read_memory(self.conn)
        need = sum(2 * len(s.to_json()) + SCHEDULE_OVERHEAD_BYTES for s in schedules)
        if memory is not None and not memory.fits(need):
            left = max(0, memory.max_bytes - memory.used_bytes)
            raise RedisFull(what, f"nothing was written (it needs about {need} bytes, Redis has {left} left)")

    def _changed(self, schedule_id: str, result: object) -> bool:
        if result == -1:
            raise ScheduleNotFound(schedule_id)
        return result == 1


def _old_definition(schedule_id: str, definition: bytes | None) -> Schedule | None:
    """The stored definition, or None when there is none or it is unreadable."""
    if definition is None:
        return None
    try:
        return decode_definition(schedule_id, text(definition))
    except (RqbeatError, ValueError):
        return None


def _trigger_changed(old: Schedule, new: Schedule) -> bool:
    return any(getattr(old, f) != getattr(new, f) for f in _TRIGGER_FIELDS)
