"""Who changed a schedule, and what: the audit record every edit writes.

Each edit script (upsert, pause, resume, trigger, remove) writes, in the same
script as the change itself, one entry to the schedule's history stream and one to
the namespace's edit log (``<ns>:log``, capped), with:

* ``by``: who (``--by``; the CLI defaults to ``user@host``, the API to ``api``, the
  dashboard to its acting user);
* ``at``: when (Redis time, as every other time rqbeat decides by);
* ``version``: the schedule's version after the edit;
* ``changed``: the fields an upsert changed, ``name: old -> new`` for small values;
* ``note``: the free text the editor gave, if any.

A schedule's *creation* goes to the edit log only: a new stream costs ~4.7 KB of
Redis memory (``MEMORY USAGE`` of a one-entry stream on Redis 7.0), too much for
every schedule of a 100k-schedule apply; its history stream starts with its first
run or edit.

Everything here is pure; :mod:`scheduler.lua.common` holds the Lua side.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.clock import iso, parse_iso_ms
from scheduler.durations import parse_duration_ms
from scheduler.errors import InvalidSchedule

#: Entries kept in ``<ns>:log`` (approximate trimming, MAXLEN ~).
LOG_MAXLEN = 10_000
#: ``by`` of an edit made through the Python API without a label.
API_BY = "api"
#: ``by`` of the resume the leader makes when a pause's ``until`` comes.
UNTIL_BY = "rqbeat (until)"
#: Longest ``by`` and ``note`` accepted (they are stored in every entry).
MAX_BY_CHARS = 100
MAX_NOTE_CHARS = 500
#: A value shown as ``old -> new`` in ``changed`` when both are at most this long
#: (as compact JSON); a longer one (args, a description) is named only.
SMALL_VALUE_CHARS = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """Who makes an edit and why: validated on construction."""

    by: str = API_BY
    note: str = ""

    def __post_init__(self) -> None:
        by = self.by.strip()
        if not by:
            raise InvalidSchedule("by", self.by, "must not be empty")
        if len(by) > MAX_BY_CHARS or any(c in by for c in "\r\n"):
            raise InvalidSchedule("by", self.by, f"must be one line of at most {MAX_BY_CHARS} characters")
        if len(self.note) > MAX_NOTE_CHARS:
            raise InvalidSchedule(
                "note", self.note[:40] + "...", f"must be at most {MAX_NOTE_CHARS} characters"
            )
        object.__setattr__(self, "by", by)
        object.__setattr__(self, "note", self.note.strip())

    def args(self) -> list[str]:
        """The ``by, note`` pair of the edit scripts' arguments."""
        return [self.by, self.note]


def edit_of(by: str | None, note: str | None) -> Edit:
    """An :class:`Edit` from optional values (the API's keyword arguments)."""
    return Edit(by=API_BY if by is None else by, note=note or "")


def cli_user() -> str:
    """``user@host``: who an edit from the command line is by, unless ``--by`` says."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's random uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """The fields that differ between two definitions (``Schedule.to_dict()`` form),
    in name order: ``name: old -> new`` when both values are small, else ``name``;
    a value absent on one side reads ``-`` (its default). Empty for a new schedule."""
    if old is None:
        return ""
    parts = []
    for name in sorted({*old, *new} - {"id"}):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        shown = _small(before), _small(after)
        parts.append(f"{name}: {shown[0]} -> {shown[1]}" if None not in shown else name)
    return "; ".join(parts)


def upsert_changes(definition: str | None, new_json: str, state: str | None) -> str:
    """The ``changed`` of an upsert from the stored definition's JSON ('' for a new
    schedule; ``definition`` alone for one that could not be read)."""
    if definition is None:
        return ""
    try:
        old = json.loads(definition)
    except ValueError:
        old = None
    if not isinstance(old, dict):
        return "definition (unreadable before)"
    found = changes(old, json.loads(new_json))
    return found or (f"state: {state} -> due" if state == "broken" else "")


def _small(value: Any) -> str | None:
    """``value`` as compact JSON when it is short enough to show (``-`` for absent)."""
    if value is None:
        return "-"
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= SMALL_VALUE_CHARS else None


def parse_until(text: str, now_ms: int) -> int:
    """When a pause ends, epoch ms: an ISO time with a timezone, or a duration from
    ``now_ms`` (``30m``, ``2h``, ``1d``). Raises :class:`InvalidSchedule` naming
    ``until`` for anything else, or for a time not after ``now_ms``."""
    value = text.strip()
    if value[:4].isdigit() and "-" in value:  # a date: ISO
        try:
            until = parse_iso_ms(value)
        except ValueError:
            raise InvalidSchedule(
                "until", text, "must be an ISO time with a timezone (2027-03-27T18:00:00Z) or a duration (2h)"
            ) from None
    else:
        until = now_ms + parse_duration_ms("until", value)
    if until <= now_ms:
        raise InvalidSchedule("until", text, f"must be in the future (now is {iso(now_ms)})")
    return until
