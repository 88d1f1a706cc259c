"""Writing an :class:`Imported` as a TOML file that ``rqbeat apply`` reads.

Python's ``tomllib`` only reads; the values written here are the JSON-like ones a
schedule holds (strings, numbers, booleans, lists, string-keyed tables), so a small
writer is enough. Tables go inline, which keeps one schedule's settings together."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.ops.importing.found import Imported

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dumps(imported: Imported) -> str:
    """The whole file: a header comment with the notes, then one table per schedule."""
    lines = [f"# Imported by `rqbeat import {imported.source}`. Review, then: rqbeat apply FILE"]
    if imported.notes:
        lines.append("#")
        lines.append("# Not carried over as it was (see each note):")
        lines.extend(f"#   {note}" for note in imported.notes)
    for schedule_id, settings in imported.schedules.items():
        lines.append("")
        lines.append(f"[schedules.{key(schedule_id)}]")
        lines.extend(f"{key(name)} = {value(v)}" for name, v in settings.items())
    return "\n".join(lines) + "\n"


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else string(name)


def value(v: Any) -> str:
    """One TOML value. Raises ValueError for what TOML cannot hold (None, NaN)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML cannot hold {v!r}")
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(item) for item in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(str(k))} = {value(item)}" for k, item in v.items()) + "}"
    raise ValueError(f"TOML cannot hold {type(v).__name__} {v!r}")


def string(text: str) -> str:
    """A basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
