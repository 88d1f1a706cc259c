"""Hypothesis strategies for bad (and good) input, shared by the bad-input tests.

Example counts stay modest so CI stays fast: the ``bad-input`` profile runs
``RQBEAT_HYPOTHESIS_EXAMPLES`` examples per test (default 40; raise it locally to
search harder). No deadline: examples that start Redis round trips vary in time.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from scheduler.model import USER_KEYS

settings.register_profile(
    "bad-input",
    max_examples=int(os.environ.get("RQBEAT_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    # the integration tests share one flushed Redis across the examples of a test
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = settings.get_profile("bad-input")

#: Characters that break lines, terminals or encodings when echoed back.
NASTY_CHARS = "\x00\x01\x1b\x7f\x85\t\r\n\u2028\u2029\ufeff\u200b\U0001f600é"

ints = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 2**63, 10**30, 10**400, -(10**400)]),
)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, 1e308, -0.0]))
nasty_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from(NASTY_CHARS), max_size=10),
    st.sampled_from(["", " ", "x" * 5000, "\ud800", "1e400", "9" * 400, "nan", "-5s", "0", "1.5"]),
)


def nested(depth: int) -> Any:
    """A list nested ``depth`` levels deep, built without recursion."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# Deeper nests are tested without hypothesis: its own printer recurses per level.
deep = st.integers(min_value=50, max_value=200).map(nested)
scalar = st.one_of(st.none(), st.booleans(), ints, floats, nasty_text)
junk = st.one_of(
    scalar,
    deep,
    st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ),
)

# Plausible values per setting: mostly valid, sometimes just wrong.
_durations = st.one_of(
    st.sampled_from(["1s", "30s", "10m", "1h30m", "2d", "500ms", "1.5s", 90, 0.5, "90"]),
    st.integers(min_value=1, max_value=10**6),
)
_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "id": st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    "target": st.from_regex(r"[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,8}){1,3}", fullmatch=True),
    "args": st.lists(st.one_of(st.integers(-1000, 1000), st.text(max_size=8), st.booleans()), max_size=4),
    "kwargs": st.dictionaries(
        st.text(max_size=8), st.integers(-1000, 1000) | st.text(max_size=8), max_size=3
    ),
    "cron": st.sampled_from(
        ["* * * * *", "30 2 * * *", "*/10 * * * * *", "@hourly", "H * * * *", "0 0 L * *"]
    )
    | st.sampled_from([["0 9 * * 1-5", "0 12 * * 6"], ["30 2 * * *", "H 3 * * *"], ["@daily"]]),
    "every": _durations,
    "timezone": st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    "queue": st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True),
    "timeout": _durations,
    "ttl": _durations,
    "result_ttl": _durations,
    "failure_ttl": _durations,
    "description": st.text(alphabet=st.characters(categories=["L", "N", "P", "Zs"]), max_size=40),
    "misfire": st.sampled_from(["coalesce", "all", "skip"]),
    "overlap": st.sampled_from(["skip", "buffer_one", "buffer_all", "cancel_other"]),
    "catchup_window": _durations,
    "jitter": st.sampled_from(["0s", "0", "1s", "5m", 0]),
    "max_attempts": st.integers(min_value=1, max_value=1000),
    "pause_on_failure": st.booleans(),
    "webhook": st.sampled_from(["https://hooks.example/rqbeat", "http://127.0.0.1:8080/a?t=1"]),
    "metrics": st.booleans(),
    "max_queued": _durations,
    "stale_after": _durations,
    "start_at": st.sampled_from(["2026-03-29T02:30:00", "2026-01-01T00:00:00Z", "2026-06-01T09:00+02:00"]),
    "end_at": st.sampled_from(["2030-01-01T00:00:00Z", "2029-10-28T02:30:00", "2031-12-31T23:59:59.5+01:00"]),
    "max_runs": st.integers(min_value=1, max_value=10**9),
    "max_concurrent": st.integers(min_value=1, max_value=1000),
    "exclude": st.lists(
        st.sampled_from(["2026-12-25", "2026-12-24..2026-12-26", "* 0-6 * * *", "0 12 * * 6", "0 0 1 1 *"]),
        max_size=4,
        unique=True,
    ),
}
USER_SETTINGS = [k for k in USER_KEYS if k != "owner"]


@st.composite
def valid_raw(draw: st.DrawFn) -> dict[str, Any]:
    """A user-facing dict (``Schedule.from_dict`` input) that should be accepted."""
    raw: dict[str, Any] = {"id": draw(_PLAUSIBLE["id"]), "target": draw(_PLAUSIBLE["target"])}
    if draw(st.booleans()):
        raw["cron"] = draw(_PLAUSIBLE["cron"])
        raw["timezone"] = draw(_PLAUSIBLE["timezone"])
    else:
        raw["every"] = draw(st.sampled_from(["1s", "30s", "10m", "1h30m", "2d", "1.5s", 90, "90"]))
    optional = [k for k in USER_SETTINGS if k not in ("id", "target", "cron", "every", "timezone")]
    for key in draw(st.lists(st.sampled_from(optional), unique=True, max_size=len(optional))):
        raw[key] = draw(_PLAUSIBLE[key])
    if "max_concurrent" in raw:  # it belongs to allow_all, which counts no runs (max_runs)
        raw["overlap"] = "allow_all"
        raw.pop("max_runs", None)
    return raw


@st.composite
def any_raw(draw: st.DrawFn) -> dict[str, Any]:
    """A valid dict with some settings replaced by junk, removed, or unknown keys added."""
    raw = draw(valid_raw())
    for key in draw(st.lists(st.sampled_from([*USER_SETTINGS, "owner"]), max_size=4)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            raw.pop(key, None)
        else:
            raw[key] = draw(junk)
    if draw(st.integers(0, 9)) == 0:
        raw[draw(nasty_text)] = draw(junk)
    return raw


# -- TOML text ---------------------------------------------------------------------


def toml_string(text: str) -> str:
    """A TOML basic string; control characters escaped as TOML requires."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """TOML text for a Python value; None has no TOML form and becomes an empty table."""
    if isinstance(value, int):  # bool too: str(True).lower() is TOML's true
        return str(value).lower()
    if isinstance(value, float):
        return _toml_float(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return "{}"


def _toml_float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def toml_document(schedules: dict[str, dict[str, Any]], defaults: dict[str, Any] | None = None) -> str:
    lines = []
    if defaults:
        lines.append("[defaults]")
        lines.extend(f"{toml_string(k)} = {toml_value(v)}" for k, v in defaults.items())
    for schedule_id, body in schedules.items():
        lines.append(f"[schedules.{toml_string(schedule_id)}]")
        lines.extend(f"{toml_string(k)} = {toml_value(v)}" for k, v in body.items() if k != "id")
    return "\n".join(lines) + "\n"


def json_text(value: Any) -> str:
    """JSON text even for values JSON cannot hold (NaN stays as the token NaN)."""
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):
        return "[" * 10_000
