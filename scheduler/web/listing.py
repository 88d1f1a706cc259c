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

A cursor is ``<source>:<position>``: an offset into a zset or the idle ids, or an
``SSCAN`` cursor plus how many of that slice's rows were shown already
(``match:8123.20``; a slice is read with a fixed ``COUNT`` so that reading it again
gives the same ids). Offsets into live zsets shift as schedules move between them,
and a set that grows is rehashed, so paging through a busy list may show a schedule
twice or skip one; every page is fresh when it is read.

The idle ids cost one ``ZDIFF`` per page that reaches them (O(all schedules) inside
Redis, ~60 ms at 100k, see :mod:`scheduler.ops.status`): paused and broken schedules
have no index of their own, and a budgeted scan would need dozens of clicks to find
the one paused schedule among 100k.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from redis import Redis

from scheduler.clock import time_reply_ms
from scheduler.errors import RqbeatError
from scheduler.hashes import read_records
from scheduler.keys import Keys
from scheduler.model import OWNER_PATTERN, QUEUE_PATTERN
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
_CURSOR = re.compile(r"(?P<source>[a-z]+):(?P<pos>[0-9]{1,20})(\.(?P<skip>[0-9]{1,6}))?")


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
    "completed": (Source.IDLE,),
}
_RANKED = (Source.RUNNING, Source.DUE, Source.IDLE)


class BadQuery(RqbeatError, ValueError):
    """A list query parameter is invalid."""


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
            cursor=_pick(args, "cursor", _CURSOR.fullmatch),
        )
        if query.cursor and query.start()[0] not in query.sources():
            raise BadQuery(f"cursor {query.cursor!r} does not belong to these filters")
        return query

    def sources(self) -> tuple[Source, ...]:
        if self.prefix:
            return (Source.MATCH,)
        return _STATE_SOURCES.get(self.state, (Source.RUNNING, Source.DUE, Source.IDLE))

    def start(self) -> tuple[Source, int, int]:
        """The source, the position in it and the rows of that slice already shown."""
        match = _CURSOR.fullmatch(self.cursor)
        if match is None:
            return self.sources()[0], 0, 0
        try:
            source = Source(match["source"])
        except ValueError:
            raise BadQuery(f"cursor {self.cursor!r} names no source") from None
        return source, int(match["pos"]), int(match["skip"] or 0)

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
        source, pos, skip = self.query.start()
        for current in sources[sources.index(source) :]:
            stopped = self._ranked(current, pos) if current in _RANKED else self._search(pos, skip)
            if stopped is not None:
                self.next_cursor = f"{current}:{stopped}"
                return
            pos, skip = 0, 0
        self.next_cursor = None

    def _full(self, budget: int = SCAN_BUDGET) -> bool:
        return len(self.found) >= self.query.size or self.examined >= budget

    def _ranked(self, source: Source, pos: int) -> str | None:
        """Reads ``source`` in order from offset ``pos``; the offset to go on from, or
        None at its end."""
        while not self._full():
            width = min(_MAX_SLICE, max(self.query.size - len(self.found), 10) * 2)
            members = self._slice(source, pos, width)
            for record in self._records(members):
                pos += 1
                self.examined += 1
                if record is not None and self.query.wants(record):
                    self.found.append(record)
                if self._full():
                    return str(pos)
            if len(members) < width:
                return None
        return str(pos)

    def _slice(self, source: Source, pos: int, width: int) -> list[str]:
        if source is Source.IDLE:
            if self._idle is None:  # a set is a valid ZDIFF input
                idle: list[bytes] = self.conn.zdiff([self.keys.ids, self.keys.due, self.keys.running])  # type: ignore[assignment]
                self._idle = sorted(str(text(m)) for m in idle)
            return self._idle[pos : pos + width]
        key = self.keys.running if source is Source.RUNNING else self.keys.due
        reply: list[bytes] = self.conn.zrange(key, pos, pos + width - 1)  # type: ignore[assignment]
        return [str(text(m)) for m in reply]

    def _search(self, cursor: int, skip: int) -> str | None:
        """Reads the ids set by ``SSCAN MATCH`` from ``cursor``, the first ``skip`` rows
        of its slice already shown; where to go on, or None at the set's end."""
        match = f"{self.query.prefix}*"
        while not self._full(SEARCH_BUDGET):
            after, reply = self.conn.sscan(self.keys.ids, cursor, match=match, count=_SEARCH_COUNT)
            self.examined += _SEARCH_COUNT  # ids Redis looked at, not the few it returned
            members = sorted(str(text(m)) for m in reply)
            found = [r for r in self._records(members) if r is not None and self.query.wants(r)]
            room = self.query.size - len(self.found)
            self.found.extend(found[skip : skip + room])
            if len(found) - skip > room:  # the page is full inside this slice
                return f"{cursor}.{skip + room}"
            cursor, skip = after, 0
            if cursor == 0:
                return None
        return str(cursor)

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


__all__ = ["BadQuery", "Page", "Query", "Source", "read_page"]
