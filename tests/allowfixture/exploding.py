"""A module under the prefix that ends whoever imports it: a replica judging a
target in it must survive (scheduler.allow treats it as not importable)."""

from __future__ import annotations

raise SystemExit("exploding: imported")
