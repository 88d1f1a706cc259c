"""The schedule store: create, change, remove, pause, resume, trigger, read.

Every write is one Lua script (:mod:`scheduler.scripts`) that checks what it
depends on, so concurrent CLI/API callers and the running leader cannot interleave
into a half-written schedule. Writes validate first: an invalid schedule never
reaches Redis.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.exceptions
from redis import Redis
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from scheduler import audit, backfillstore, cron, errors, hashes, policy, scripts, stored, windows
from scheduler.allow import AllowList
from scheduler.backfill import Plan as BackfillPlan
from scheduler.backfill import Status as BackfillStatus
from scheduler.clock import iso, redis_now_ms
from scheduler.errors import (
    CorruptDefinition,
    InvalidSchedule,
    RedisFull,
    RqbeatError,
    ScheduleConflict,
    ScheduleNotFound,
)
from scheduler.keys import DEFAULT_NAMESPACE, HISTORY_MAXLEN, Keys
from scheduler.memory import full_is_error, read_memory
from scheduler.model import Schedule
from scheduler.protocol import (
    ANY_VERSION,
    NO_FIRE,
    RUNS_DONE_FIELD,
    UPSERT_READ_ABSENT,
    UPSERT_READ_FIELDS,
    BackfillOverlap,
    BackfillStartReply,
    PauseReply,
    RecordReply,
    RemoveReply,
    ResumeReply,
    ScheduleState,
    TriggerReply,
    UpsertReply,
)
from scheduler.records import ScheduleRecord, decode_definition, text

log = logging.getLogger(__name__)

_TRIGGER_FIELDS = ("cron", "every_ms", "timezone", "jitter_ms", "start_at", "end_at", "exclude", "max_runs")
#: The version UPSERT gives a schedule it creates.
FIRST_VERSION = 1
#: Schedules per upsert script call: one round trip each way, Redis busy ~ms.
UPSERT_CHUNK = hashes.CHUNK
#: Upsert chunks sent before the oldest is answered (:func:`scheduler.scripts.pipelined`).
UPSERTS_AHEAD = 2
#: Read-merge-write passes of :meth:`Client.edit` before a busy schedule's edit gives up.
EDIT_ATTEMPTS = 5
#: A resume re-reads and tries again when an ack or an edit raced it, this many times.
RESUME_ATTEMPTS = 5
#: Called with how many schedules an upsert has settled since the last call.
Progress = Callable[[int], None]
#: UPSERT_READ rows by schedule id (:meth:`Client.read_rows`): only ids that exist.
Rows = dict[str, Mapping[str, Any]]
#: The row of a schedule that does not exist.
_ABSENT: Mapping[str, Any] = dict.fromkeys(UPSERT_READ_FIELDS)
#: What an upsert pass carries from sending a chunk to settling it: its writes, its size.
_Chunk = tuple[list[Schedule], int]
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

    def upsert(
        self,
        schedule: Schedule,
        *,
        version: int | None = None,
        by: str | None = None,
        note: str | None = None,
    ) -> UpsertResult:
        """Create or replace a schedule. A new schedule, or a changed trigger, gets its
        next fire computed from now (Redis time); other changes keep the pending fire.

        Without ``version`` the last writer wins (a race with another writer is re-read
        and retried). With it, the write is a compare-and-set: it happens only if the
        stored version is still ``version`` (0: only if there is no such schedule), and
        raises :class:`~scheduler.errors.StaleVersion` (``ScheduleExists`` for 0)
        otherwise, having written nothing.

        Every edit is audited (:mod:`scheduler.audit`): ``by`` names who makes it
        (default ``api``), ``note`` says why; both land in the schedule's history and
        the namespace's edit log with the changed fields, written by the same script."""
        edit = audit.edit_of(by, note)
        if version is None:
            return self._upsert_many([schedule], None, edit)[0]
        return self._upsert_at(schedule, version, edit)

    def upsert_many(
        self,
        schedules: Sequence[Schedule],
        *,
        progress: Progress | None = None,
        by: str | None = None,
        note: str | None = None,
        read: Rows | None = None,
    ) -> builtins.list[UpsertResult]:
        """Upsert several schedules with pipelined round trips (``rqbeat apply``);
        ``progress`` hears of each chunk as Redis answers it; ``by`` and ``note`` as
        :meth:`upsert`. ``read``, what :meth:`read_rows` returned for these ids, spares
        the first pass its own read (an id it lacks is taken as absent): each write is
        still a compare-and-set on the version read, so a schedule edited since is
        refused by the script and re-read and written in the next pass, as a race with
        any reader's read. Raises :class:`~scheduler.errors.RedisFull` when Redis is out
        of memory."""
        return self._upsert_many(schedules, progress, audit.edit_of(by, note), read)

    def _upsert_many(
        self,
        schedules: Sequence[Schedule],
        progress: Progress | None,
        edit: audit.Edit,
        read: Rows | None = None,
    ) -> builtins.list[UpsertResult]:
        self._check_allowed(schedules)
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
                pending = self._upsert_round(pending, results, edit, progress, read)
                read = None  # the schedules that lost a race are read again
                if not pending:
                    return [results[s.id] for s in schedules]
        except redis.exceptions.OutOfMemoryError as exc:
            # Each chunk is one script, refused whole; the chunks before it stand (and
            # the one sent behind it may: it is not counted here). An upsert of the
            # same schedules again writes only the rest (the written ones read back
            # unchanged), so a re-run converges.
            written = sum(r.action != "unchanged" for r in results.values())
            done = f"{written} schedule(s) of it were written before (re-running writes the rest)"
            raise RedisFull(what, done if written else "nothing was written") from exc
        raise ScheduleConflict(f"schedule {pending[0].id!r} kept changing during the upsert")

    def edit(
        self, schedule_id: str, changes: Mapping[str, Any], *, by: str | None = None, note: str | None = None
    ) -> UpsertResult:
        """Change some settings of a stored schedule (:meth:`Schedule.edited`: the
        others, args included, stay). A compare-and-set on the version read, so an edit
        made meanwhile by someone else is never overwritten with settings read before
        it; when that happens the read and the merge are simply done again (a lost
        compare-and-set wrote nothing, so this retry cannot write twice).
        Raises :class:`ScheduleNotFound`, or ``StaleVersion`` when the schedule kept
        changing for :data:`EDIT_ATTEMPTS` passes."""
        retrying = Retrying(
            retry=retry_if_exception_type(errors.StaleVersion),
            stop=stop_after_attempt(EDIT_ATTEMPTS),
            reraise=True,
        )
        return retrying(self._edit_once, schedule_id, changes, audit.edit_of(by, note))

    def _check_allowed(self, schedules: Sequence[Schedule]) -> None:
        """All targets checked before anything is written; one that does not import
        here passes by its name alone, and the log says so."""
        if self.allow is None:
            return
        for schedule in schedules:
            verdict = self.allow.check(schedule.target)
            if not verdict.resolved:
                log.warning(
                    "schedule=%s target=%s allowed by name only: %s (the code may live on workers only)",
                    schedule.id,
                    schedule.target,
                    verdict.reason,
                )

    def remove(self, schedule_id: str, *, by: str | None = None, note: str | None = None) -> bool:
        """Delete a schedule and its history (the edit log records who removed it).
        Returns False if there was none."""
        edit = audit.edit_of(by, note)
        now = redis_now_ms(self.conn)
        k = self.keys
        keys = [
            k.schedule(schedule_id),
            k.history(schedule_id),
            k.due,
            k.running,
            k.ids,
            k.revision,
            k.events,
            k.queued,
            k.stale,
            k.broken,
            k.failing,
            k.metered,
            k.paused_until,
            k.log,
            k.backfill(schedule_id),
            k.backfills,
            k.succeeded(schedule_id),
            k.runs(schedule_id),
        ]
        with full_is_error(f"removing schedule {schedule_id!r}"):
            args = [schedule_id, iso(now), *edit.args()]
            reply = RemoveReply(scripts.run(self._scripts.remove, keys, args))
        return reply is RemoveReply.REMOVED

    def pause(
        self,
        schedule_id: str,
        *,
        by: str | None = None,
        note: str | None = None,
        until_ms: int | None = None,
        version: int | None = None,
    ) -> bool:
        """Stop firing (a run in flight finishes). With ``until_ms`` (epoch ms, in the
        future by Redis time) the leader resumes it then, by itself, recorded as
        resumed by ``rqbeat (until)``. Pausing a paused schedule with a note or an
        until replaces its note and until. False if it was already paused and nothing
        changed. Raises :class:`InvalidSchedule` for an until not in the future,
        having written nothing. With ``version``, a compare-and-set in the same
        script: it happens only if the stored version is still ``version``, else
        raises :class:`~scheduler.errors.StaleVersion` having written nothing."""
        edit = audit.edit_of(by, note)
        k = self.keys
        now = redis_now_ms(self.conn)
        if until_ms is not None and until_ms <= now:
            raise InvalidSchedule("until", iso(until_ms), f"must be in the future (now is {iso(now)})")
        until = [iso(until_ms), until_ms / 1000] if until_ms is not None else ["", 0]
        keys = [k.schedule(schedule_id), k.due, k.revision, k.events, k.history(schedule_id), k.stale]
        keys += [k.paused_until, k.log]
        args = [schedule_id, iso(now), self.history_maxlen, *until, *edit.args(), _expected(version)]
        with full_is_error(f"pausing schedule {schedule_id!r}"):
            reply = PauseReply(scripts.run(self._scripts.pause, keys, args))
        if reply is PauseReply.NOT_FOUND:
            raise ScheduleNotFound(schedule_id)
        if reply is PauseReply.CHANGED:
            raise self._stale_now(schedule_id, version)
        return reply is not PauseReply.ALREADY_PAUSED

    def resume(
        self,
        schedule_id: str,
        *,
        by: str | None = None,
        note: str | None = None,
        version: int | None = None,
    ) -> bool:
        """Fire again from the first fire after now. The fires pending or passed while
        it was paused never run; they are recorded as ``skipped`` in its history. A run
        still in flight finishes, and its ack re-arms the schedule after now as well.
        False if it was not paused. With ``version``, only if the stored version is
        still ``version`` (else ``StaleVersion``, nothing written): the script's own
        compare-and-set on the version read makes that check atomic with the write."""
        # Safe to retry: a RESUME refused as CHANGED wrote nothing.
        retrying = Retrying(
            retry=retry_if_exception_type(_ResumeRaced),
            stop=stop_after_attempt(RESUME_ATTEMPTS),
            reraise=True,
        )
        try:
            reply = retrying(self._resume_once, schedule_id, audit.edit_of(by, note), version=version)
        except _ResumeRaced:
            raise ScheduleConflict(f"schedule {schedule_id!r} kept changing during the resume") from None
        if reply is ResumeReply.NOT_FOUND:
            raise ScheduleNotFound(schedule_id)
        return reply is ResumeReply.RESUMED

    def resume_at_until(self, schedule_id: str, *, token: str) -> ResumeReply:
        """The leader's resume of a pause whose until has come: fenced by the lease
        ``token`` (``DEPOSED`` when it is not the lease's) and only if the pause's
        until is still the one read (``UNTIL_MOVED`` when someone paused it again);
        recorded as resumed by :data:`scheduler.audit.UNTIL_BY`. Raises
        ``ScheduleNotFound`` and ``RqbeatError`` (broken) as :meth:`resume` does."""
        record = self.get(schedule_id)
        fence = (token, record.raw.get("paused_until", ""))
        if not fence[1]:  # resumed or paused for good meanwhile: the zset entry is stale
            fence = (token, "-")
        try:
            return self._resume_once(schedule_id, audit.Edit(by=audit.UNTIL_BY), fence, record)
        except _ResumeRaced:  # an ack or an edit meanwhile: the next look tries again
            return ResumeReply.CHANGED

    def _resume_once(
        self,
        schedule_id: str,
        edit: audit.Edit,
        fence: tuple[str, str] = ("", ""),
        record: ScheduleRecord | None = None,
        *,
        version: int | None = None,
    ) -> ResumeReply:
        """One read-compute-write: the script refuses (``CHANGED``) when the version,
        the pending fire or the run in flight moved since the read. ``fence`` is the
        leader's (token, until read), empty for a person's resume."""
        record = record or self.get(schedule_id)
        if version is not None and record.version != version:
            raise _stale(schedule_id, version, record.version)
        if record.schedule is None:
            raise RqbeatError(
                f"schedule {schedule_id!r} is broken ({record.error}); apply a valid definition"
            )
        trigger = record.schedule.trigger
        now = redis_now_ms(self.conn)
        fire = cron.next_fire_ms(trigger, now)
        score = policy.due_score_ms(record.schedule, fire)
        first = _first_unrun_ms(trigger, record)
        skipped = policy.paused_fires(trigger, first, now)
        seen = [record.raw.get(f, "") for f in ("version", "fire_at", "job_id")]
        k = self.keys
        keys = [k.schedule(schedule_id), k.due, k.revision, k.events, k.history(schedule_id)]
        keys += [k.paused_until, k.log, k.leader]
        fire_text = NO_FIRE if fire >= windows.NEVER_MS else iso(fire)  # past end_at: completed
        args = [schedule_id, fire_text, score / 1000, iso(now), self.history_maxlen, *seen, skipped]
        first_text = iso(first) if first is not None else ""
        with full_is_error(f"resuming schedule {schedule_id!r}"):
            args += [first_text, *edit.args(), *fence]
            reply = ResumeReply(scripts.run(self._scripts.resume, keys, args))
        if reply is ResumeReply.CHANGED:
            raise _ResumeRaced
        return reply

    def trigger(
        self, schedule_id: str, *, by: str | None = None, note: str | None = None, version: int | None = None
    ) -> None:
        """Run the schedule now, once; its regular fires carry on afterwards. When a
        fire is pending and due already (overdue, or waiting for its retry), that fire
        runs now, its attempts kept: a trigger never drops a fire. With ``version``, a
        compare-and-set as :meth:`pause`'s."""
        edit = audit.edit_of(by, note)
        now = redis_now_ms(self.conn)
        k = self.keys
        keys = [k.schedule(schedule_id), k.due, k.revision, k.events, k.history(schedule_id), k.log]
        args = [schedule_id, iso(now), now / 1000, self.history_maxlen, *edit.args(), _expected(version)]
        with full_is_error(f"triggering schedule {schedule_id!r}"):
            reply = text(scripts.run(self._scripts.trigger, keys, args))
        if reply == TriggerReply.NOT_FOUND:
            raise ScheduleNotFound(schedule_id)
        if reply == TriggerReply.CHANGED:
            raise self._stale_now(schedule_id, version)
        if reply != TriggerReply.TRIGGERED:  # the state that prevents it
            raise RqbeatError(f"schedule {schedule_id!r} is {reply!s}; only a due schedule can be triggered")

    def backfill(
        self,
        schedule_id: str,
        start_ms: int,
        end_ms: int,
        *,
        overlap: BackfillOverlap = BackfillOverlap.ALLOW,
        force: bool = False,
        dry_run: bool = False,
        by: str | None = None,
        note: str | None = None,
        version: int | None = None,
    ) -> BackfillPlan:
        """Run each fire of ``[start_ms, end_ms)`` (past, at most
        :data:`~scheduler.backfill.MAX_FIRES`) once, oldest first, on the leader, beside
        the live fires; fires that already ran to success are skipped unless ``force``.
        ``overlap=skip`` runs a fire only while the schedule has no live run in flight.
        Returns the plan; ``dry_run`` writes nothing. Raises (having written nothing)
        :class:`ScheduleNotFound`, :class:`~scheduler.backfill.BadWindow`,
        :class:`~scheduler.backfill.BackfillActive`, or :class:`RqbeatError` when
        there is nothing to run. With ``version``, a compare-and-set: started only if the
        schedule is still at ``version``, else :class:`~scheduler.errors.StaleVersion`.
        The start is audited (``by``, ``note``) in the history and the edit log."""
        edit = audit.edit_of(by, note)
        the_plan = backfillstore.plan(
            self.conn, self.keys, schedule_id, start_ms, end_ms, force=force, overlap=overlap
        )
        if dry_run:
            return the_plan
        reply = backfillstore.start(
            self.conn,
            self.keys,
            self._scripts,
            the_plan,
            by=edit.by,
            note=edit.note,
            history_maxlen=self.history_maxlen,
            version=version,
        )
        if reply is BackfillStartReply.CHANGED:
            raise self._stale_now(schedule_id, version)
        return the_plan

    def backfill_status(self, schedule_id: str) -> BackfillStatus | None:
        """The schedule's last backfill, running or finished; None when it has none."""
        return backfillstore.status(self.conn, self.keys, schedule_id)

    def cancel_backfill(self, schedule_id: str, *, by: str | None = None, note: str | None = None) -> bool:
        """Stop the schedule's running backfill (a run in flight finishes), audited as
        ``by``'s edit. False when none was running."""
        edit = audit.edit_of(by, note)
        return backfillstore.cancel(
            self.conn,
            self.keys,
            self._scripts,
            schedule_id,
            by=edit.by,
            note=edit.note,
            history_maxlen=self.history_maxlen,
        )

    def record_edit(
        self,
        schedule_id: str,
        event: str,
        *,
        by: str | None = None,
        note: str | None = None,
        changed: str = "",
    ) -> bool:
        """Audit an edit made by a script that cannot write the entry itself (a
        backfill, say): an ``event`` entry in the schedule's history and the edit log,
        with who, when (Redis time), the version, ``changed`` and the note. Prefer
        writing the entry in the edit's own script (:data:`scheduler.lua.common.AUDIT`):
        this is a second round trip, not atomic with the edit. False (nothing
        written) when there is no such schedule."""
        edit = audit.edit_of(by, note)
        now = redis_now_ms(self.conn)
        k = self.keys
        keys = [k.schedule(schedule_id), k.history(schedule_id), k.log]
        args = [schedule_id, event, iso(now), self.history_maxlen, *edit.args(), changed]
        with full_is_error(f"recording an edit of schedule {schedule_id!r}"):
            reply = RecordReply(scripts.run(self._scripts.record_edit, keys, args))
        return reply is RecordReply.RECORDED

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
        return stored_of(self.read_rows(ids))

    def read_rows(self, ids: Sequence[str]) -> Rows:
        """The fields an upsert decides from (``UPSERT_READ_FIELDS``) of each of ``ids``
        that exists, by id; one script call per chunk. Give it to :meth:`upsert_many`
        as ``read`` to spare that a second read."""
        out: Rows = {}
        prefix = self.keys.schedule("")
        for chunk in hashes.chunks(ids, UPSERT_CHUNK):
            reply = scripts.run(self._scripts.upsert_read, [], [prefix, *chunk])
            for schedule_id, row in zip(chunk, _upsert_rows(reply, len(chunk)), strict=True):
                if row is not _ABSENT:
                    out[schedule_id] = row
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

    def _stale_now(self, schedule_id: str, version: int | None) -> errors.StaleVersion:
        """The refusal of a compare-and-set on ``version``, naming the version there now."""
        found = int(self.conn.hget(self.keys.schedule(schedule_id), "version") or 0)
        return _stale(schedule_id, version or 0, found)

    def _read(self, ids: Sequence[str]) -> builtins.list[ScheduleRecord]:
        return builtins.list(hashes.read_records(self.conn, self.keys, ids))

    def _upsert_round(
        self,
        schedules: Sequence[Schedule],
        results: dict[str, UpsertResult],
        edit: audit.Edit,
        progress: Progress | None = None,
        read: Rows | None = None,
    ) -> builtins.list[Schedule]:
        """One read-compute-write pass, chunk by chunk, each chunk computed while Redis
        writes the last (with ``read`` given, nothing is read: the computation never
        waits behind the chunk in flight); returns the schedules that lost a race (an
        edit between the read and the write)."""
        lost: builtins.list[Schedule] = []

        # One "now" for the pass: new schedules sharing a trigger share their first
        # fire's computation (memoized by trigger and time) across all chunks.
        now = redis_now_ms(self.conn)

        def chunks() -> Iterator[tuple[_Chunk, builtins.list[Any] | None]]:
            for chunk in hashes.chunks(schedules, UPSERT_CHUNK):
                rows = None if read is None else [read.get(s.id, _ABSENT) for s in chunk]
                writes, args = self._prepare(chunk, results, edit, now=now, rows=rows)
                yield (writes, len(chunk)), args if writes else None

        def settle(context: _Chunk, versions: Any) -> bool:
            writes, size = context
            lost_before = len(lost)
            for schedule, version in zip(writes, versions or [], strict=True):
                if version == UpsertReply.CONFLICT:
                    lost.append(schedule)
                else:
                    action: Literal["created", "updated"] = (
                        "created" if version == FIRST_VERSION else "updated"
                    )
                    results[schedule.id] = UpsertResult(schedule.id, action, int(version))
            if progress is not None:  # the lost are counted when a later round settles them
                progress(size - (len(lost) - lost_before))
            return True

        k = self.keys
        keys = [k.due, k.ids, k.revision, k.events, k.broken, k.log, k.stale]
        # two chunks in flight: Redis runs one while the next waits queued behind it
        scripts.pipelined(self.conn, self._scripts.upsert, keys, chunks(), settle, ahead=UPSERTS_AHEAD)
        return lost

    def _check_headroom(self, schedules: Sequence[Schedule], what: str) -> None:
        """Refuse up front an upsert that cannot fit under maxmemory, so that it is not
        cut off between chunks. Unknown memory (INFO refused) is not a refusal."""
        memory = read_memory(self.conn)
        if memory is None or not memory.max_bytes:  # no limit: spare sizing 100k definitions
            return
        need = sum(2 * len(s.to_json()) + SCHEDULE_OVERHEAD_BYTES for s in schedules)
        if not memory.fits(need):
            left = max(0, memory.max_bytes - memory.used_bytes)
            raise RedisFull(what, f"nothing was written (it needs about {need} bytes, Redis has {left} left)")

    def _upsert_at(self, schedule: Schedule, version: int, edit: audit.Edit) -> UpsertResult:
        """:meth:`upsert` as a compare-and-set on ``version``."""
        self._check_allowed([schedule])
        results: dict[str, UpsertResult] = {}
        writes, args = self._prepare([schedule], results, edit, expected={schedule.id: version})
        if not writes:
            return results[schedule.id]
        k = self.keys
        with full_is_error(f"writing schedule {schedule.id!r}"):
            keys = [k.due, k.ids, k.revision, k.events, k.broken, k.log, k.stale]
            (written,) = scripts.run(self._scripts.upsert, keys, args)
        if written == UpsertReply.CONFLICT:  # moved between the read and the script: report what is there
            raise _stale(schedule.id, version, int(self.conn.hget(k.schedule(schedule.id), "version") or 0))
        return UpsertResult(schedule.id, "created" if written == FIRST_VERSION else "updated", int(written))

    def _edit_once(self, schedule_id: str, changes: Mapping[str, Any], edit: audit.Edit) -> UpsertResult:
        record = self.get(schedule_id)
        if record.schedule is None:
            raise RqbeatError(
                f"schedule {schedule_id!r} is broken ({record.error}); apply a valid definition"
            )
        return self._upsert_at(record.schedule.edited(changes), record.version, edit)

    def _prepare(
        self,
        schedules: Sequence[Schedule],
        results: dict[str, UpsertResult],
        edit: audit.Edit,
        *,
        expected: Mapping[str, int] | None = None,
        now: int | None = None,
        rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[builtins.list[Schedule], builtins.list[Any]]:
        """Read a chunk's current versions (unless ``rows``, read before, are given) and
        build the upsert's arguments for the schedules that changed (the unchanged go
        straight to ``results``). With ``expected`` (id → version), a schedule found at
        another version raises ``StaleVersion`` before anything is sent. ``now`` (Redis
        time) defaults to the time of the read."""
        prefix = self.keys.schedule("")
        if rows is None:
            reply = scripts.run(self._scripts.upsert_read, [], [prefix, *(s.id for s in schedules)])
            rows = _upsert_rows(reply, len(schedules))
        now = redis_now_ms(self.conn) if now is None else now
        layouts = stored.Layouts()
        args: builtins.list[Any] = []  # per schedule; the header and the layouts go before
        writes: builtins.list[Schedule] = []
        for schedule, row in zip(schedules, rows, strict=True):
            if row is _ABSENT and expected is None:  # most of a big apply: nothing to compare
                # (a new schedule has no runs counted: max_runs cannot be reached yet)
                args += _create_args(schedule, cron.next_fire_ms(schedule.trigger, now), layouts)
                writes.append(schedule)
                continue
            version, state = row["version"], row["state"]
            definition = stored.definition_text(row)
            if expected is not None and int(version or 0) != expected[schedule.id]:
                raise _stale(schedule.id, expected[schedule.id], int(version or 0))
            if (
                definition is not None
                and definition == schedule.to_json()
                and text(state) != ScheduleState.BROKEN
            ):
                results[schedule.id] = UpsertResult(schedule.id, "unchanged", int(version))
                continue
            old = _old_definition(schedule.id, definition)
            idle = text(state) in (ScheduleState.BROKEN, ScheduleState.COMPLETED)
            refire = old is None or idle or _trigger_changed(old, schedule)
            fire = cron.next_fire_ms(schedule.trigger, now) if refire else None
            if fire is not None and self._runs_left(schedule, int(version or 0)) == 0:
                fire = windows.NEVER_MS
            args += [schedule.id, int(version or 0), *_fire_args(schedule, fire)]
            args.append(audit.upsert_changes(definition, schedule.to_json(), text(state)))
            new_fields = stored.encode(schedule)
            stale = stored.stale_fields(row, new_fields)
            args += [layouts.number(tuple(new_fields)), len(stale), *new_fields.values(), *stale]
            writes.append(schedule)
        header = [prefix, iso(now), self.keys.history(""), self.history_maxlen, *edit.args()]
        return writes, [*header, *layouts.args(), *args]

    def _runs_left(self, schedule: Schedule, version: int) -> int | None:
        """Runs ``max_runs`` still allows (None: no limit). Read only for a stored
        schedule with a limit: the counter exists only then."""
        if schedule.max_runs is None or version == 0:
            return None
        done = int(self.conn.hget(self.keys.schedule(schedule.id), RUNS_DONE_FIELD) or 0)
        return max(0, schedule.max_runs - done)


class _ResumeRaced(Exception):
    """RESUME found the schedule changed since its read: read again."""


def _first_unrun_ms(trigger: cron.Trigger, record: ScheduleRecord) -> int | None:
    """The earliest fire of a paused schedule that has neither run nor been dropped:
    the pending fire, or the one after the run still in flight (None: unknown)."""
    if record.fire_ms is None:
        return None
    return cron.next_fire_ms(trigger, record.fire_ms) if record.job_id else record.fire_ms


def _fire_args(schedule: Schedule, fire: int | None) -> tuple[str, float]:
    """UPSERT's fire_at and due score: keep the pending fire (None), none left, or
    ``fire``."""
    if fire is None:
        return "", 0
    if fire >= windows.NEVER_MS:  # past end_at, or max_runs reached: completed
        return NO_FIRE, 0
    return iso(fire), policy.due_score_ms(schedule, fire) / 1000


def _create_args(schedule: Schedule, fire: int, layouts: stored.Layouts) -> builtins.list[Any]:
    """UPSERT's arguments for a schedule known not to exist (read as absent): version
    0, no change list, no field to delete."""
    fields = stored.encode(schedule)
    layout = layouts.number(tuple(fields))
    return [schedule.id, 0, *_fire_args(schedule, fire), "", layout, 0, *fields.values()]


def _old_definition(schedule_id: str, definition: str | None) -> Schedule | None:
    """The stored definition, or None when there is none or it is unreadable."""
    if definition is None:
        return None
    try:
        return decode_definition(schedule_id, definition)
    except CorruptDefinition:
        return None


def _expected(version: int | None) -> str:
    """A script's expected-version argument (``ANY_VERSION``: none expected)."""
    return ANY_VERSION if version is None else str(version)


def stored_of(rows: Rows) -> dict[str, tuple[str | None, str | None]]:
    """(definition text, state) by id of :meth:`Client.read_rows`' rows, as
    :meth:`Client.stored` returns them."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for schedule_id, row in rows.items():
        version, state, definition = row["version"], row["state"], stored.definition_text(row)
        if version is not None or definition is not None or state is not None:
            out[schedule_id] = (definition, text(state))
    return out


def _upsert_rows(reply: list[Any], count: int) -> builtins.list[Mapping[str, Any]]:
    """The ``count`` rows of an UPSERT_READ reply: field name → value or None, and
    ``_ABSENT`` itself for a schedule without a key."""
    rows: builtins.list[Mapping[str, Any]] = []
    at = 0
    for _ in range(count):
        n = int(reply[at])
        if n == UPSERT_READ_ABSENT:
            rows.append(_ABSENT)
        else:
            rows.append(dict(zip(UPSERT_READ_FIELDS, reply[at + 1 : at + 1 + n], strict=True)))
        at += 1 + n
    if at != len(reply):
        raise ValueError(f"UPSERT_READ replied {len(reply)} values, expected {at}")
    return rows


def _stale(schedule_id: str, expected: int, found: int) -> errors.StaleVersion:
    if expected == 0:
        return errors.ScheduleExists(schedule_id, found)
    return errors.StaleVersion(schedule_id, expected, found)


def _trigger_changed(old: Schedule, new: Schedule) -> bool:
    return any(getattr(old, f) != getattr(new, f) for f in _TRIGGER_FIELDS)
