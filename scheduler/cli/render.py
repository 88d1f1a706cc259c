"""Pure text formatting for the CLI: aligned tables, times, ages and colours.

Nothing here touches Redis or the terminal. Cells carry an optional style; whether the
escape codes reach the screen is decided at output time by ``click.echo`` (stripped
when stdout is not a terminal, or when ``NO_COLOR`` is set: see :mod:`scheduler.cli.app`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click

#: click.style keyword arguments by meaning; one place so every command agrees.
STYLES: dict[str, dict[str, object]] = {
    "ok": {"fg": "green"},
    "busy": {"fg": "cyan"},
    "warn": {"fg": "yellow"},
    "bad": {"fg": "red", "bold": True},
    "dim": {"dim": True},
    "head": {"bold": True},
}

#: The style of each schedule state and history event / outcome.
TONE = {
    "due": "ok",
    "running": "busy",
    "in flight": "busy",
    "paused": "warn",
    "broken": "bad",
    "succeeded": "ok",
    "dispatched": "busy",
    "triggered": "busy",
    "created": "ok",
    "updated": "busy",
    "removed": "warn",
    "resumed": "ok",
    "failed": "bad",
    "gave_up": "bad",
    "missed": "warn",
    "skipped": "warn",
    "leader": "ok",
    "standby": "dim",
}


@dataclass(frozen=True, slots=True)
class Cell:
    """Table text with an optional tone (a key of :data:`STYLES`)."""

    text: str
    tone: str | None = None

    def render(self, width: int) -> str:
        padded = self.text.ljust(width)
        if not self.tone:
            return padded
        # pad first, style the text only: escape codes must not count towards the width
        return click.style(self.text, **STYLES[self.tone]) + padded[len(self.text) :]  # type: ignore[arg-type]


def toned(text: str, tone: str | None = None) -> Cell:
    """A cell whose tone follows its own text (``failed`` is red) unless one is given."""
    return Cell(text, tone if tone is not None else TONE.get(text))


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[Cell | str]]) -> list[str]:
    """An aligned table: two spaces between columns, no trailing blanks, bold header."""
    cells = [[c if isinstance(c, Cell) else Cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell.text))
    lines = ["  ".join(Cell(h, "head").render(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.extend("  ".join(c.render(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    return lines


def age(delta_ms: int) -> str:
    """``4m12s``: the two largest units of a span, seconds when it is short."""
    delta = abs(delta_ms) // 1000
    if delta == 0:
        return f"{abs(delta_ms)}ms" if delta_ms else "0s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if delta >= size:
            parts.append(f"{delta // size}{unit}")
            delta %= size
        elif parts:  # "1h0m" reads worse than "1h"; but stop at two units either way
            break
        if len(parts) == 2:
            break
    return "".join(parts)


def relative(ms: int, now_ms: int) -> str:
    """``in 4m12s`` / ``3s ago`` / ``now``."""
    if abs(ms - now_ms) < 1000:
        return "now"
    return f"in {age(ms - now_ms)}" if ms > now_ms else f"{age(now_ms - ms)} ago"


def duration(ms: int) -> str:
    """A run's length: ``850ms``, ``1.2s``, ``3m4s``."""
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    return age(ms)


def wall(ms: int, tz: str, *, zone: bool = False) -> str:
    """``2027-03-28 03:00:00`` on the wall clock of ``tz`` (``+ CEST`` with ``zone``)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(tz))
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z" if zone else "%Y-%m-%d %H:%M:%S")


def local_iso(ms: int, tz: str) -> str:
    """The instant in ``tz`` with its offset, to the second."""
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(tz))
    return moment.isoformat(timespec="seconds")


def first_line(text: str, limit: int = 60) -> str:
    """The first line of ``text``, cut to ``limit`` characters with an ellipsis."""
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"
