"""Reading the namespace's edit log (``<ns>:log``, written by the edit scripts:
:mod:`scheduler.audit`), newest last, filtered by time, schedule and editor.

The log is capped (~10,000 entries), so reading it back in pages of
:data:`PAGE` until enough entries match is bounded whatever the filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from scheduler.keys import Keys
from scheduler.records import text

#: Entries read per XREVRANGE while filtering.
PAGE = 500


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One audited edit."""

    entry_id: str
    at_ms: int
    schedule_id: str
    event: str
    by: str
    version: str
    changed: str
    note: str
    extra: dict[str, str]  # until (a pause's), fire_at (a trigger's)

    def what(self) -> str:
        """The changes, or what the edit's extra fields say."""
        if self.changed:
            return self.changed
        return ", ".join(f"{k} {v}" for k, v in sorted(self.extra.items()) if k != "at")

    def to_json(self) -> dict[str, Any]:
        version = int(self.version) if self.version.isdigit() else None
        return {
            "id": self.schedule_id,
            "entry": self.entry_id,
            "at": self.extra.get("at", ""),
            "event": self.event,
            "by": self.by,
            "version": version,
            "changed": self.changed or None,
            "note": self.note or None,
            **{k: v for k, v in self.extra.items() if k != "at"},
        }


def decode(entry_id: Any, raw: dict[Any, Any]) -> LogEntry:
    """One XRANGE entry of the log."""
    eid = str(text(entry_id))
    fields = {str(text(k)): str(text(v)) for k, v in raw.items()}
    known = {name: fields.pop(name, "") for name in ("id", "event", "by", "version", "changed", "note")}
    return LogEntry(
        entry_id=eid,
        at_ms=int(eid.split("-", maxsplit=1)[0]),
        schedule_id=known["id"],
        event=known["event"] or "?",
        by=known["by"],
        version=known["version"],
        changed=known["changed"],
        note=known["note"],
        extra=fields,
    )


def read_log(
    conn: Redis,
    keys: Keys,
    count: int,
    *,
    since_ms: int | None = None,
    schedule_id: str | None = None,
    by: str | None = None,
) -> list[LogEntry]:
    """The newest ``count`` entries that match (oldest first): after ``since_ms``,
    of ``schedule_id``, by ``by``."""
    found: list[LogEntry] = []
    low = f"{since_ms + 1}-0" if since_ms is not None else "-"
    high = "+"
    while len(found) < count:
        page: Any = conn.xrevrange(keys.log, max=high, min=low, count=PAGE)
        for entry_id, raw in page:
            entry = decode(entry_id, raw)
            if (schedule_id is None or entry.schedule_id == schedule_id) and (by is None or entry.by == by):
                found.append(entry)
                if len(found) == count:
                    break
        if len(page) < PAGE:
            break
        high = f"({text(page[-1][0])}"  # exclusive: the next page starts below the last
    return list(reversed(found))
