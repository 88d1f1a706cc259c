"""Log formatting (scheduler.logs): identity fields from ``key=%s`` templates and
``extra=``, JSON lines, password masking, and the thinning of repeated failures."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest

from scheduler.logs import (
    JsonFormatter,
    TextFormatter,
    formatter,
    record_fields,
    template_keys,
    utc_stamp,
    worth_logging,
)

CREATED_S = 1_800_000_000.25  # 2027-01-15T08:00:00.250Z


def record(
    msg: str, *args: Any, level: int = logging.INFO, extra: dict[str, Any] | None = None, exc: Any = None
) -> logging.LogRecord:
    rec = logging.LogRecord("scheduler.engine.dispatch", level, __file__, 1, msg, args or None, exc)
    rec.created = CREATED_S
    for name, value in (extra or {}).items():
        setattr(rec, name, value)
    return rec


def test_template_keys_pair_each_conversion_with_the_key_before_it() -> None:
    assert template_keys("dispatched schedule=%s fire=%s job_id=%s attempt=%d epoch=%d lag_ms=%d") == (
        "schedule", "fire", "job_id", "attempt", "epoch", "lag_ms",
    )  # fmt: skip
    # %% takes no argument; a conversion without key= still takes one; old spellings map
    assert template_keys("100%% done %s job=%s fire_at=%r x=%.2f") == (None, "job_id", "fire", "x")
    assert template_keys("no conversions") == ()


def test_json_line_has_the_envelope_and_the_identity_in_order() -> None:
    rec = record(
        "dispatched schedule=%s fire=%s job=%s attempt=%d epoch=%d lag_ms=%d",
        "nightly", "2027-01-15T08:00:00.000Z", "nightly-1800000000000-1", 1, 7, 12,
    )  # fmt: skip
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj == {
        "ts": "2027-01-15T08:00:00.250Z",
        "level": "INFO",
        "logger": "scheduler.engine.dispatch",
        "msg": "dispatched schedule=nightly fire=2027-01-15T08:00:00.000Z "
        "job=nightly-1800000000000-1 attempt=1 epoch=7 lag_ms=12",
        "schedule": "nightly",
        "fire": "2027-01-15T08:00:00.000Z",
        "job_id": "nightly-1800000000000-1",
        "attempt": 1,
        "epoch": 7,
        "lag_ms": 12,
    }
    assert list(obj)[:9] == ["ts", "level", "logger", "msg", "schedule", "fire", "job_id", "attempt", "epoch"]


def test_extra_fields_count_and_envelope_keys_cannot_be_overwritten() -> None:
    rec = record("odd msg=%s level=%s", "x", "y", extra={"schedule": "s1", "epoch": 3, "color": "red"})
    obj = json.loads(JsonFormatter().format(rec))
    assert obj["msg"] == "odd msg=x level=y" and obj["level"] == "INFO"
    assert (obj["schedule"], obj["epoch"]) == ("s1", 3)
    assert "color" not in obj  # only identity fields are taken from extra=


def test_a_mismatched_template_adds_no_fields() -> None:
    rec = record("schedule=%s", "a")
    rec.args = ("a", "b")  # as a buggy call would pass them: no guessing which is which
    assert record_fields(rec) == {}


def test_values_that_are_not_json_become_text() -> None:
    rec = record("failed schedule=%s error=%s", "s1", ValueError("bad"))
    obj = json.loads(JsonFormatter().format(rec))
    assert obj["error"] == "bad"


def test_passwords_are_masked_in_both_formats() -> None:
    url = "redis://admin:hunter2@redis:6379/0"
    rec = record("redis=%s", url, extra={"node": url})
    for fmt in (JsonFormatter(), TextFormatter()):
        out = fmt.format(rec)
        assert "hunter2" not in out
        assert "admin:***@redis" in out


def test_tracebacks_stay_on_one_json_line() -> None:
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        rec = record("unexpected error node=%s", "n1", level=logging.ERROR, exc=sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["level"] == "ERROR" and "RuntimeError: kaput" in obj["exc"]


def test_text_line_is_utc_level_logger_message() -> None:
    out = TextFormatter().format(record("leader node=%s epoch=%d acquired", "n1", 4))
    assert (
        out == "2027-01-15T08:00:00.250Z INFO    scheduler.engine.dispatch: leader node=n1 epoch=4 acquired"
    )


def test_formatter_by_name() -> None:
    assert isinstance(formatter("json"), JsonFormatter)
    assert isinstance(formatter("text"), TextFormatter)


def test_utc_stamp() -> None:
    assert utc_stamp(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize(("streak", "logged"), [(0, False), (1, True), (2, True), (3, False), (4, True)])
def test_failures_are_logged_at_powers_of_two(streak: int, logged: bool) -> None:
    assert worth_logging(streak) is logged


def test_an_hour_of_failures_logs_a_handful_of_lines() -> None:
    # the loop retries at most once a second while Redis is down
    assert sum(worth_logging(n) for n in range(1, 3601)) == 12
