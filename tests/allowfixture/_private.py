"""A private module under the prefix: refused by name unless the list names it."""

from __future__ import annotations


def job() -> str:
    return "private"
