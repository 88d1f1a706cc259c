"""The stored form of a definition: one hash field per setting.

A schedule's hash holds each setting that differs from its default as its own field,
named as in the TOML file (``target``, ``cron``, ``timezone``, ``max_attempts``,
``owner``...), beside the state fields. Why not one JSON ``definition`` field (the
form before 0.x): Redis keeps a hash in its compact listpack encoding only while every
value is at most ``hash-max-listpack-value`` (64) bytes, and a realistic definition as
one JSON text is over 64 bytes, which made every schedule hash a hashtable, about
twice the memory. Short per-setting values stay compact, whole numbers are stored as
listpack integers, and ``redis-cli HGETALL`` still reads like the TOML file.

A value is stored as its text when it is a string that is not itself JSON (a target,
a cron expression, a zone, ``"30s"``), else as compact JSON (numbers, true/false,
lists, objects, and a string that would read as JSON): so :func:`decode_value` inverts
:func:`encode_value` exactly, for any setting :data:`~scheduler.model.USER_KEYS` has,
including settings added later.

The rest of rqbeat compares and caches definitions by their *text*, the compact JSON
of :meth:`Schedule.to_json`: :func:`definition_text` rebuilds exactly that text from
the fields, and returns the old ``definition`` field as it is when a hash written by
an older rqbeat still has one (read compatibility: such a schedule loads and runs; its
next write stores the new form and deletes the old field).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from redis import Redis

from scheduler.model import USER_KEYS, Schedule

#: The field of the previous stored form: the whole definition as one JSON text.
LEGACY_FIELD = "definition"
#: Every setting a definition can store, as hash field names (the id is the key's).
SETTING_FIELDS: tuple[str, ...] = tuple(key for key in USER_KEYS if key != "id")
#: The fields a definition is read from (HMGET), the legacy one first.
DEFINITION_FIELDS: tuple[str, ...] = (LEGACY_FIELD, *SETTING_FIELDS)
_SEPARATORS = (",", ":")
#: Distinct setting texts :func:`encode_value` remembers (bounded: a file of 1M
#: distinct descriptions must not hold them all twice).
TEXT_CACHE_SIZE = 16_384
_JSON_STARTS = frozenset('"[{-0123456789tfn \t\r\n')


def encode_value(value: Any) -> str:
    """One setting's stored text (see the module docstring)."""
    if isinstance(value, str):
        return _encode_text(value)
    if type(value) is int:  # not a bool (a subclass): JSON of an int is its digits
        return str(value)
    return json.dumps(value, separators=_SEPARATORS, ensure_ascii=False, sort_keys=True)


@lru_cache(maxsize=TEXT_CACHE_SIZE)
def _encode_text(value: str) -> str:
    # memoized: the schedules of a file share most texts (target, zone, cron, queue,
    # owner), and deciding whether one reads as JSON may take a parse attempt
    if not _reads_as_json(value):
        return value
    return json.dumps(value, separators=_SEPARATORS, ensure_ascii=False)


def decode_value(stored: str) -> Any:
    """The value :func:`encode_value` stored as ``stored``."""
    try:
        return _strict_loads(stored)
    except (ValueError, RecursionError):
        return stored


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _strict_loads(text: str) -> Any:
    """JSON as the standard says: Python's ``NaN``/``Infinity`` extension is refused, so
    the text ``NaN`` (a description, say) stays text."""
    return json.loads(text, parse_constant=_refuse_constant)


def _reads_as_json(value: str) -> bool:
    # JSON text starts with one of these (after whitespace): most settings (a target,
    # a zone, a queue, an owner) are decided without a parse attempt
    if value[:1] not in _JSON_STARTS:
        return False
    try:
        _strict_loads(value)
    except (ValueError, RecursionError):
        return False
    return True


def encode(schedule: Schedule) -> dict[str, str]:
    """The hash fields of ``schedule``'s definition."""
    return {key: encode_value(value) for key, value in schedule.stored_settings().items()}


def definition_text(fields: Mapping[str, Any]) -> str | None:
    """The definition's JSON text (:meth:`Schedule.to_json`) from a hash's fields
    (text, bytes or None values; other fields are ignored); the legacy ``definition``
    field when there is one; None when the hash holds no definition at all."""
    legacy = fields.get(LEGACY_FIELD)
    if legacy is not None:
        return _text(legacy)
    settings = {}
    for key in SETTING_FIELDS:
        value = fields.get(key)
        if value is not None:
            settings[key] = decode_value(_text(value))
    if not settings:
        return None
    return json.dumps(settings, sort_keys=True, separators=_SEPARATORS)


def row_text(names: Sequence[str], row: Sequence[Any]) -> str | None:
    """:func:`definition_text` of an HMGET reply ``row`` of the fields ``names`` (a
    shorter row reads the fields it lacks as absent)."""
    return definition_text(dict(zip(names, row, strict=False)))


def read_text(conn: Redis, key: str) -> str | None:
    """:func:`definition_text` of the schedule hash ``key`` (one HMGET)."""
    return row_text(DEFINITION_FIELDS, conn.hmget(key, DEFINITION_FIELDS))


def stale_fields(stored: Mapping[str, Any], new: Mapping[str, str]) -> list[str]:
    """The definition fields of a stored hash that a write of ``new`` must delete:
    settings put back to their default, and the legacy ``definition`` field."""
    return [name for name in DEFINITION_FIELDS if stored.get(name) is not None and name not in new]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Layouts:
    """The field lists of one UPSERT call, each sent once: a schedule then sends its
    layout's number and its values only, not a name beside every value. The schedules
    of a file share a few layouts (the same settings set), so a chunk of 1,000 sends
    a handful of name lists instead of ~5,000 names.

    UPSERT's arguments: the number of layouts, then each layout as its field count and
    its names (:meth:`args`); a schedule refers to one by :meth:`number` (1-based, as
    Lua counts).
    """

    __slots__ = ("_numbers",)

    def __init__(self) -> None:
        self._numbers: dict[tuple[str, ...], int] = {}

    def number(self, names: tuple[str, ...]) -> int:
        """The layout number of ``names`` (in that order), added if new."""
        number = self._numbers.get(names)
        if number is None:
            number = self._numbers[names] = len(self._numbers) + 1
        return number

    def args(self) -> list[Any]:
        """The layouts as UPSERT's arguments: their count, then each one's size and names."""
        out: list[Any] = [len(self._numbers)]
        for names in self._numbers:  # insertion order: the numbers given out
            out.append(len(names))
            out.extend(names)
        return out
