"""What a reader found: schedules as ``rqbeat apply`` settings, and notes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from scheduler.errors import InvalidSchedule
from scheduler.model import ID_PATTERN, Schedule
from scheduler.ops.importing import toml

_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")
MAX_ID_CHARS = 100


@dataclass(slots=True)
class Imported:
    """What a reader found: valid schedules (as ``apply`` settings) and notes."""

    source: str
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, settings: dict[str, Any], caveats: list[str] | None = None) -> None:
        """Validate ``settings`` as a schedule under an id made from ``name``; a schedule
        that rqbeat would refuse becomes a note instead."""
        schedule_id = self._unique_id(name)
        try:
            Schedule.from_dict({"id": schedule_id, **settings})
            toml.value(settings)
        except (InvalidSchedule, ValueError) as exc:
            self.notes.append(f"{name}: not imported: {exc}")
            return
        self.schedules[schedule_id] = settings
        if schedule_id != name:
            self.notes.append(f"{name}: imported as {schedule_id!r} (rqbeat ids use A-Z a-z 0-9 _ -)")
        self.notes.extend(f"{schedule_id}: {caveat}" for caveat in caveats or [])

    def skip(self, name: str, reason: str) -> None:
        self.notes.append(f"{name}: not imported: {reason}")

    def _unique_id(self, name: str) -> str:
        base = _NOT_ID.sub("-", name).strip("-")[:MAX_ID_CHARS] or "imported"
        candidate, n = base, 1
        while candidate in self.schedules or not ID_PATTERN.fullmatch(candidate):
            n += 1
            suffix = f"-{n}"
            candidate = base[: MAX_ID_CHARS - len(suffix)] + suffix
        return candidate


def decoded(value: bytes | str) -> str:
    """A Redis key or value as text (replies arrive as bytes)."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def seconds_text(seconds: float) -> str | None:
    """``300`` -> ``"300s"``; None for a value rqbeat cannot hold (not whole ms, or <= 0)."""
    ms = seconds * 1000
    if seconds <= 0 or ms != int(ms):
        return None
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(ms)}ms"
