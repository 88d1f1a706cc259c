"""Declarative schedules: a TOML file applied as a whole.

::

    [defaults]                 # optional, merged into every schedule below
    queue = "reports"
    timezone = "Europe/Berlin"

    [schedules.nightly-report] # the table name is the schedule id
    target = "app.jobs.nightly_report"
    cron = "30 2 * * *"

Schedules applied from a file are owned by ``apply:<group>`` (the group defaults to
the file name), so ``--prune`` removes only schedules that this group created and
never one made with ``rqbeat add`` or the Python API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli

from scheduler.allow import AllowList, Verdict
from scheduler.errors import InvalidSchedule, RqbeatError
from scheduler.model import OWNER_PATTERN, USER_KEYS, Schedule
from scheduler.protocol import ScheduleState
from scheduler.records import ScheduleRecord, decode_definition

_TOP_LEVEL = ("defaults", "schedules")
#: A file of 1M realistic schedules is about 93 MB of TOML (bench/register.py): the
#: limit leaves room for that, and refuses a file whose schedules would not fit in
#: memory anyway.
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Plan:
    """What applying a file will do; computed without writing."""

    owner: str
    create: list[Schedule] = field(default_factory=list)
    update: list[Schedule] = field(default_factory=list)
    unchanged: list[Schedule] = field(default_factory=list)
    prune: list[str] = field(default_factory=list)
    #: The stored definition text of each schedule in ``update``, by id.
    before: dict[str, str | None] = field(default_factory=dict)

    def owner_changes(self) -> list[OwnerChange]:
        """The updates that move a schedule to this file's group: from another file's
        group, or from ``api``/``cli`` (made by the Python API or ``rqbeat add``)."""
        changes = []
        for schedule in self.update:
            previous = stored_owner(self.before.get(schedule.id))
            if previous != schedule.owner:
                changes.append(OwnerChange(schedule.id, previous, schedule.owner))
        return changes


@dataclass(frozen=True, slots=True)
class OwnerChange:
    """A schedule that changes hands; ``old`` is None when the stored definition is
    unreadable."""

    id: str
    old: str | None
    new: str


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One setting that differs, as user-facing values (None: not set)."""

    key: str
    old: Any
    new: Any


def group_for(path: Path) -> str:
    """Default group name: the file name without its extension, made id-safe."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "default"


def load_file(path: Path, *, group: str) -> list[Schedule]:
    """Parse and validate every schedule in ``path``; raises :class:`InvalidSchedule`
    (field names prefixed with the schedule id) before anything is written."""
    owner = f"apply:{group}"
    if not OWNER_PATTERN.fullmatch(owner):
        raise InvalidSchedule("group", group, "use 1-100 of A-Z a-z 0-9 _ . -")
    try:
        too_large = path.stat().st_size > MAX_FILE_BYTES
        text = "" if too_large else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidSchedule("file", str(path), exc.strerror or str(exc)) from None
    except UnicodeDecodeError as exc:
        raise InvalidSchedule("file", str(path), f"is not UTF-8 text: {exc}") from None
    if too_large:
        raise InvalidSchedule("file", str(path), f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        # tomli is tomllib (the same code and errors), compiled: ~5x faster on big files
        document = tomli.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an int of over 4300 digits
        raise InvalidSchedule("file", str(path), f"is not valid TOML: {exc}") from None
    except RecursionError:  # tomli recurses per nesting level (~500 levels suffice)
        raise InvalidSchedule("file", str(path), "is not valid TOML: nested too deeply") from None
    return parse_document(document, owner=owner)


def parse_document(document: dict[str, Any], *, owner: str) -> list[Schedule]:
    """Schedules from an already parsed TOML document."""
    unknown = sorted(set(document) - set(_TOP_LEVEL))
    if unknown:
        raise InvalidSchedule(
            unknown[0],
            document[unknown[0]],
            "unknown top-level table; expected [defaults] and [schedules.<id>]",
        )
    defaults = document.get("defaults", {})
    schedules = document.get("schedules", {})
    for name, value in (("defaults", defaults), ("schedules", schedules)):
        if not isinstance(value, dict):
            raise InvalidSchedule(name, value, "must be a table")
    _check_defaults(defaults, any_schedules=bool(schedules))
    out = []
    shapes: dict[tuple[Any, ...], Schedule] = {}
    for schedule_id, body in schedules.items():
        if not isinstance(body, dict):
            raise InvalidSchedule(f"schedules.{schedule_id}", body, "must be a table")
        if "id" in body and body["id"] != schedule_id:
            raise InvalidSchedule(f"schedules.{schedule_id}.id", body["id"], "differs from the table name")
        if "owner" in body or "owner" in defaults:
            raise InvalidSchedule(f"schedules.{schedule_id}.owner", body.get("owner"), "is set by apply")
        try:
            settings = {**defaults, **body}
            settings.pop("id", None)
            out.append(_build(schedule_id, settings, owner, shapes))
        except InvalidSchedule as exc:
            raise InvalidSchedule(f"schedules.{schedule_id}.{exc.field}", exc.value, exc.reason) from None
    return out


def _build(
    schedule_id: str, settings: dict[str, Any], owner: str, shapes: dict[tuple[Any, ...], Schedule]
) -> Schedule:
    """:meth:`Schedule.from_dict`, validated once per shape: schedules whose settings
    besides the id are the same (the same values of the same types, so ``true`` is
    not taken for ``1``) are copies of the first under their own id
    (:meth:`Schedule.with_id`). A file of 100k schedules usually has few shapes (its
    distinct cron expressions, say)."""
    shape = shape_of(settings)
    if shape is None:  # a list or a table among the values: not hashable, built alone
        return Schedule.from_dict({**settings, "id": schedule_id}, owner=owner)
    first = shapes.get(shape)
    if first is None:
        first = shapes[shape] = Schedule.from_dict({**settings, "id": schedule_id}, owner=owner)
        return first
    return first.with_id(schedule_id)


def shape_of(settings: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """``settings`` (without the id), with each value's type, as a hashable key; None
    when a value is not hashable."""
    shape = (tuple(settings.items()), tuple(map(type, settings.values())))
    try:
        hash(shape)
    except TypeError:
        return None
    return shape


def _check_defaults(defaults: dict[str, Any], *, any_schedules: bool) -> None:
    if "id" in defaults:
        raise InvalidSchedule("defaults.id", defaults["id"], "an id cannot have a default")
    unknown = sorted(set(defaults) - set(USER_KEYS))
    # each schedule reports a bad default under its own name; a file without any must too
    if unknown and not any_schedules:
        raise InvalidSchedule(f"defaults.{unknown[0]}", defaults[unknown[0]], "unknown setting")


def check_allowed(schedules: list[Schedule], allow: AllowList | None) -> list[tuple[str, Verdict]]:
    """Refuse the whole file when any target is not allowed (:mod:`scheduler.allow`).
    Returns the schedules whose targets do not import here and so passed by name
    only, with their verdicts, for the caller to warn about."""
    if allow is None:
        return []
    by_name_only = []
    for schedule in schedules:
        verdict = allow.check(schedule.target, field=f"schedules.{schedule.id}.target")
        if not verdict.resolved:
            by_name_only.append((schedule.id, verdict))
    return by_name_only


def plan(
    schedules: list[Schedule],
    stored: Mapping[str, tuple[str | None, str | None]],
    *,
    owner: str,
    existing: list[ScheduleRecord] | None = None,
) -> Plan:
    """Compare the file with what is stored: ``stored`` maps the file's ids that exist
    to their (definition text, state) (:meth:`Client.stored`). ``existing``, every
    stored schedule, is given only to prune: the group's schedules the file dropped."""
    result = Plan(owner=owner)
    for schedule in schedules:
        record = stored.get(schedule.id)
        if record is None:
            result.create.append(schedule)
        elif record[0] == schedule.to_json() and record[1] != ScheduleState.BROKEN:
            result.unchanged.append(schedule)
        else:
            result.update.append(schedule)
            result.before[schedule.id] = record[0]
    if existing is not None:
        wanted = {s.id for s in schedules}
        result.prune.extend(
            r.id
            for r in existing
            if r.id not in wanted and r.schedule is not None and r.schedule.owner == owner
        )
    return result


def field_changes(before: str | None, after: Schedule) -> list[FieldChange] | None:
    """The settings that differ between a stored definition text and ``after``, in
    the order of :meth:`Schedule.to_dict`; None when the stored one is unreadable."""
    try:
        old = decode_definition(after.id, before).to_dict()
    except (RqbeatError, ValueError):
        return None
    new = after.to_dict()
    keys = [*new, *(k for k in old if k not in new)]
    return [FieldChange(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def stored_owner(before: str | None) -> str | None:
    """The owner named by a stored definition text, without validating the rest (cheap
    for 100k); None when the text is unreadable. The stored form leaves out ``api``."""
    try:
        raw = json.loads(before) if before is not None else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    owner = raw.get("owner", "api")
    return owner if isinstance(owner, str) else None
