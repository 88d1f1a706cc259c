"""One page of the schedule list, in a few round trips whatever the number of schedules.

The list is the concatenation of *sources*, each read a slice at a time: the
``running`` zset (runs in flight, by when the watchdog looks next), the ``due`` zset
(soonest fire first), then the idle schedules (paused or broken: the ids in neither
zset, one ``ZDIFF`` computed by Redis, by id). An id-prefix search is one source of its
own: ``SSCAN ... MATCH prefix*`` of the ids set. A page reads one slice of ids, one
pipelined read of those schedules (:func:`scheduler.hashes.read_records`, the one
bulk reader) with their due scores; filters on the definition
(queue, owner) and on the state are applied to each slice, and a page examines at most
:data:`SCAN_BUDGET` ids (:data:`SEARCH_BUDGET` for a search, which Redis matches
server-side), so a filter that matches little returns a short page with a cursor to
go on from instead of decoding 100k schedules in one request.

A cursor is where the last page stopped, exclusive of that row (keyset paging): in a
zset the ``(score, member)`` of the last row looked at (``due:1798761600:bulk-000120``,
read from there by :data:`scheduler.lua.listing.RANGE_AFTER`, whatever moved meanwhile),
in the idle ids the last id (``idle:nightly``), in a search the ``SSCAN`` cursor of the
slice and the last id shown from it (``match:8123:bulk-004321``; a slice is read with a
fixed ``COUNT`` so that reading it again gives the same ids, shown by id). Hence a
schedule that stays where it is is shown exactly once however the others move while
one pages: never repeated, never skipped. One that moves while the pages are read (is
dispatched, acknowledged, paused, triggered) is shown where each page finds it: twice
if it moved past the cursor, not at all if it moved behind it. Every page is fresh when
it is read; the list is not a snapshot.

The idle ids cost one ``ZDIFF`` per page that reaches them (O(all schedules) inside
Redis, ~60 ms at 100k, see :mod:`scheduler.ops.status`): paused and broken schedules
have no index of their own, and a budgeted scan would need dozens of clicks to find
the one paused schedule among 100k.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis import Redis

from scheduler import scripts
from scheduler.clock import time_reply_ms
from scheduler.errors import RqbeatError
from scheduler.hashes import read_records
from scheduler.keys import Keys
from scheduler.lua.listing import RANGE_AFTER
from scheduler.model import ID_PATTERN, OWNER_PATTERN, QUEUE_PATTERN
from scheduler.protocol import STATES
from scheduler.records import ScheduleRecord, text

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: Ids one page request examines at most before it returns what it found.
SCAN_BUDGET = 5_000
#: Ids a prefix search lets Redis match per request (``SSCAN MATCH`` is cheap per id:
#: ~2 ms per 10k on the server), so a search covers 100k schedules in one request.
SEARCH_BUDGET = 100_000
#: ``SSCAN`` ``COUNT`` of a search; fixed, so that a cursor re-reads the same slice.
_SEARCH_COUNT = 10_000
_MAX_SLICE = 1_000
_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,100}")
#: ``<source>:<position>``; each source's position is checked by :meth:`Position.parse`.
_CURSOR = re.compile(r"(?P<source>[a-z]+):(?P<at>[A-Za-z0-9_.:+-]{1,160})")
#: A zset score as Redis writes it (``%.17g``: ``1798761600``, ``1.5e-05``, ``inf``).
_SCORE = r"[-+]?(inf|[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?)"
_RANKED_AT = re.compile(rf"(?P<score>{_SCORE}):(?P<member>{ID_PATTERN.pattern})")
_MATCH_AT = re.compile(rf"(?P<scan>[0-9]{{1,20}})(:(?P<member>{ID_PATTERN.pattern}))?")


class Source(StrEnum):
    """Where a page reads ids from, in list order."""

    RUNNING = "running"
    DUE = "due"
    IDLE = "idle"  # in neither zset: paused or broken
    MATCH = "match"  # an id-prefix search over every id


#: The sources each state filter reads. A state not named here (one a newer rqbeat
#: adds) reads everything and filters by the stored state.
_STATE_SOURCES: dict[str, tuple[Source, ...]] = {
    "": (Source.RUNNING, Source.DUE, Source.IDLE),
    "due": (Source.DUE,),
    "running": (Source.RUNNING,),
    "paused": (Source.RUNNING, Source.IDLE),  # a paused schedule's last run may be in flight
    "broken": (Source.IDLE,),
}


class BadQuery(RqbeatError, ValueError):
    """A list query parameter is invalid."""


@dataclass(frozen=True, kw_only=True)
class Position:
    """Where a page starts: after the row ``(score, member)`` of a zset, after the id
    ``member`` of the idle ids, or in the ``SSCAN`` slice ``scan`` after the id
    ``member`` (empty: from the start of it)."""

    source: Source
    score: str = ""
    member: str = ""
    scan: int = 0

    @classmethod
    def parse(cls, cursor: str) -> Position:
        """From a cursor; :class:`BadQuery` when it is not one."""
        match = _CURSOR.fullmatch(cursor)
        try:
            source = Source(match["source"]) if match else None
        except ValueError:
            source = None
        if match is None or source is None:
            raise BadQuery(f"cursor {cursor!r} names no source")
        at = match["at"]
        if source is Source.IDLE and ID_PATTERN.fullmatch(at):
            return cls(source=source, member=at)
        ranked = _RANKED_AT.fullmatch(at)
        if source in (Source.RUNNING, Source.DUE) and ranked:
            return cls(source=source, score=ranked["score"], member=ranked["member"])
        scan = _MATCH_AT.fullmatch(at)
        if source is Source.MATCH and scan:
            return cls(source=source, scan=int(scan["scan"]), member=scan["member"] or "")
        raise BadQuery(f"cursor {cursor!r} is not a position in {source}")

    def cursor(self) -> str:
        if self.source is Source.IDLE:
            return f"{self.source}:{self.member}"
        if self.source is Source.MATCH:
            return f"{self.source}:{self.scan}" + (f":{self.member}" if self.member else "")
        return f"{self.source}:{self.score}:{self.member}"


@dataclass(frozen=True, kw_only=True)
class Query:
    """What the list shows: filters, page size and where to start."""

    state: str = ""
    queue: str = ""
    owner: str = ""
    prefix: str = ""
    size: int = PAGE_SIZE
    cursor: str = ""

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> Query:
        """From URL parameters; :class:`BadQuery` names the bad one."""
        query = cls(
            state=_pick(args, "state", lambda v: v in STATES or v in _STATE_SOURCES),
            queue=_pick(args, "queue", QUEUE_PATTERN.fullmatch),
            owner=_pick(args, "owner", OWNER_PATTERN.fullmatch),
            prefix=_pick(args, "prefix", _PREFIX.fullmatch),
            size=_size(args.get("size", "")),
            cursor=_pick(args, "cursor", Position.parse),
        )
        if query.cursor and query.start().source not in query.sources():
            raise BadQuery(f"cursor {query.cursor!r} does not belong to these filters")
        return query

    def sources(self) -> tuple[Source, ...]:
        if self.prefix:
            return (Source.MATCH,)
        return _STATE_SOURCES.get(self.state, (Source.RUNNING, Source.DUE, Source.IDLE))

    def start(self) -> Position:
        """Where this page starts: the cursor's position, or the first source's start."""
        if not self.cursor:
            return Position(source=self.sources()[0])
        return Position.parse(self.cursor)

    def params(self, **changes: str) -> dict[str, str]:
        """The non-default parameters, for links (``cursor=`` for the next page)."""
        values = {
            "state": self.state,
            "queue": self.queue,
            "owner": self.owner,
            "prefix": self.prefix,
            "size": "" if self.size == PAGE_SIZE else str(self.size),
            **changes,
        }
        return {k: v for k, v in values.items() if v}

    def wants(self, record: ScheduleRecord) -> bool:
        schedule = record.schedule
        return (
            (not self.state or record.state == self.state)
            and (not self.queue or (schedule is not None and schedule.queue == self.queue))
            and (not self.owner or (schedule is not None and schedule.owner == self.owner))
        )


@dataclass(frozen=True, kw_only=True)
class Page:
    """One page of the list and how to go on."""

    records: list[ScheduleRecord]
    next_cursor: str | None
    examined: int
    now_ms: int
    counts: dict[str, int] = field(default_factory=dict)


def read_page(conn: Redis, keys: Keys, query: Query) -> Page:
    """The rows of ``query``'s page (see the module docstring for the cost)."""
    pipe = conn.pipeline(transaction=False)
    pipe.time()
    pipe.scard(keys.ids)
    pipe.zcard(keys.due)
    pipe.zcard(keys.running)
    time_reply, total, due, running = pipe.execute()
    counts = {
        "total": total,
        "due": due,
        "running": running,
        "paused or broken": max(0, total - due - running),
    }
    walker = _Walker(conn, keys, query)
    walker.walk()
    if query.prefix:  # a search reads in set order: show each page by id
        walker.found.sort(key=lambda r: r.id)
    return Page(
        records=walker.found,
        next_cursor=walker.next_cursor,
        examined=walker.examined,
        now_ms=time_reply_ms(time_reply),
        counts=counts,
    )


class _Walker:
    """Reads slices from the query's sources until the page is full, the sources end
    or the budget is spent; remembers where it stopped."""

    def __init__(self, conn: Redis, keys: Keys, query: Query) -> None:
        self.conn, self.keys, self.query = conn, keys, query
        self.found: list[ScheduleRecord] = []
        self.examined = 0
        self.next_cursor: str | None = None
        self._idle: list[str] | None = None

    def walk(self) -> None:
        sources = self.query.sources()
        start = self.query.start()
        for current in sources[sources.index(start.source) :]:
            if current is not start.source:
                start = Position(source=current)
            stopped = self._search(start) if current is Source.MATCH else self._ranked(start)
            if stopped is not None:
                self.next_cursor = stopped.cursor()
                return
        self.next_cursor = None

    def _full(self, budget: int | None = None) -> bool:
        limit = SCAN_BUDGET if budget is None else budget
        return len(self.found) >= self.query.size or self.examined >= limit

    def _ranked(self, at: Position) -> Position | None:
        """Reads ``at``'s source in order after ``at``; the position of the last row
        looked at, or None at the source's end."""
        while not self._full():
            width = min(_MAX_SLICE, max(self.query.size - len(self.found), 10) * 2)
            rows = self._slice(at, width)
            members = [member for member, _ in rows]
            for (member, score), record in zip(rows, self._records(members), strict=True):
                at = Position(source=at.source, score=score, member=member)
                self.examined += 1
                if record is not None and self.query.wants(record):
                    self.found.append(record)
                if self._full():
                    return at
            if len(rows) < width:
                return None
        return at

    def _slice(self, at: Position, width: int) -> list[tuple[str, str]]:
        """Up to ``width`` (member, score) after ``at`` (the idle ids have no score)."""
        if at.source is Source.IDLE:
            if self._idle is None:  # a set is a valid ZDIFF input
                idle: list[bytes] = self.conn.zdiff([self.keys.ids, self.keys.due, self.keys.running])  # type: ignore[assignment]
                self._idle = sorted(str(text(m)) for m in idle)
            first = bisect.bisect_right(self._idle, at.member) if at.member else 0
            return [(member, "") for member in self._idle[first : first + width]]
        key = self.keys.running if at.source is Source.RUNNING else self.keys.due
        script = scripts.register(self.conn, RANGE_AFTER, scripts.Flags.READS)
        reply = scripts.run(script, [key], [at.score, at.member, width])
        return [(str(text(reply[i])), str(text(reply[i + 1]))) for i in range(0, len(reply), 2)]

    def _search(self, at: Position) -> Position | None:
        """Reads the ids set by ``SSCAN MATCH`` from ``at`` (its slice's ids up to
        ``at.member`` already shown); where to go on, or None at the set's end."""
        match = f"{self.query.prefix}*"
        cursor, shown = at.scan, at.member
        while not self._full(SEARCH_BUDGET):
            after, reply = self.conn.sscan(self.keys.ids, cursor, match=match, count=_SEARCH_COUNT)
            self.examined += _SEARCH_COUNT  # ids Redis looked at, not the few it returned
            members = sorted(m for m in (str(text(m)) for m in reply) if m > shown)
            found = [r for r in self._records(members) if r is not None and self.query.wants(r)]
            room = self.query.size - len(self.found)
            self.found.extend(found[:room])
            if len(found) > room:  # the page is full inside this slice
                return Position(source=Source.MATCH, scan=cursor, member=found[room - 1].id)
            cursor, shown = int(after), ""
            if cursor == 0:
                return None
        return Position(source=Source.MATCH, scan=cursor)

    def _records(self, ids: Sequence[str]) -> Iterator[ScheduleRecord | None]:
        """Each of ``ids`` in order, None for one removed since it was listed (so that
        offsets keep counting ids)."""
        found = {r.id: r for r in read_records(self.conn, self.keys, ids)}
        for schedule_id in ids:
            yield found.get(schedule_id)


def _pick(args: Mapping[str, str], name: str, valid: Any) -> str:
    value = (args.get(name) or "").strip()
    if value and not valid(value):
        raise BadQuery(f"{name}: {value[:100]!r} is not a valid value")
    return value


def _size(value: str) -> int:
    if not value:
        return PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise BadQuery(f"size: must be a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(value)


__all__ = ["BadQuery", "Page", "Position", "Query", "Source", "read_page"]
