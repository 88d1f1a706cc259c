"""Log lines: one per event, as text or as one JSON object.

rqbeat's log calls carry an event's identity in the message as ``key=%s`` pairs::

    log.info("dispatched schedule=%s fire=%s job_id=%s attempt=%d epoch=%d", ...)

so a text line reads well and greps well, and the JSON formatter turns the very same
pairs into fields (paired from the *template* and the arguments, never parsed back out
of the rendered text). Fields given with ``extra={...}`` are taken too. No second set of
arguments at every call site, and no cost unless a line is actually emitted.

This module only formats; handlers are installed by the CLI alone (library code that
configures logging surprises the application embedding it).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from scheduler.connection import mask_url

#: The identity of a run, in this order in a JSON line; ``extra=`` may set them too.
IDENTITY = ("schedule", "fire", "job_id", "attempt", "epoch", "node")
#: Older spellings in messages, mapped to the field names above.
ALIASES = {"job": "job_id", "fire_at": "fire"}
_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})
# A %-conversion (``%%`` is an escaped percent sign and takes no argument), with the
# ``key=`` right before it when there is one.
_CONVERSION = re.compile(r"(?:(\w+)=)?%(%|[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[diouxXeEfFgGcrsa])")
_SCALARS = (int, float, bool, str, type(None))


@lru_cache(maxsize=1024)
def template_keys(template: str) -> tuple[str | None, ...]:
    """The key of each argument-taking conversion in a %-template, None where a
    conversion has no ``key=`` before it. Pure; cached per template."""
    keys: list[str | None] = []
    for match in _CONVERSION.finditer(template):
        if match.group(2) == "%":
            continue
        name = match.group(1)
        keys.append(ALIASES.get(name, name) if name else None)
    return tuple(keys)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``key=%s`` pairs of a record's message and its identity ``extra`` fields."""
    fields: dict[str, Any] = {}
    args = record.args
    if isinstance(record.msg, str) and isinstance(args, tuple) and args:
        keys = template_keys(record.msg)
        if len(keys) == len(args):
            for key, value in zip(keys, args, strict=True):
                if key is not None and key not in _RESERVED:
                    fields[key] = _plain(value)
    for name in IDENTITY:
        value = record.__dict__.get(name)
        if value is not None:
            fields[name] = _plain(value)
    return fields


def _plain(value: Any) -> Any:
    """A JSON-safe value: scalars as they are (strings with passwords masked), the
    rest as text."""
    if isinstance(value, str):
        return _masked(value)
    return value if isinstance(value, _SCALARS) else _masked(str(value))


def _masked(text: str) -> str:
    # the substring test is far cheaper than the regex, and almost no line has a URL
    return mask_url(text) if "://" in text else text


@lru_cache(maxsize=4)
def _second_stamp(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def utc_stamp(created_s: float) -> str:
    """``2026-11-22T07:09:07.597Z``: UTC, millisecond precision. The formatted second
    is cached: a burst logs thousands of lines within the same one."""
    second = int(created_s)
    return f"{_second_stamp(second)}.{int((created_s - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the identity fields (in
    :data:`IDENTITY` order), any other ``key=`` pairs, and ``exc`` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": utc_stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": _masked(record.getMessage()),
        }
        fields = record_fields(record)
        line.update((k, fields.pop(k)) for k in IDENTITY if k in fields)
        line.update(fields)
        if record.exc_info:
            line["exc"] = _masked(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<UTC time> LEVEL logger: message``, passwords in URLs masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_stamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return _masked(super().format(record))


def formatter(kind: str) -> logging.Formatter:
    """The formatter for ``--log-format`` ``text`` or ``json``."""
    return JsonFormatter() if kind == "json" else TextFormatter()


def worth_logging(streak: int) -> bool:
    """Whether the ``streak``-th failure in a row gets a line: the 1st, 2nd, 4th, 8th,
    ... so an outage logs a handful of lines, not one per retry."""
    return streak > 0 and streak & (streak - 1) == 0
