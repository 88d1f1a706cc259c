"""The pure part of noticing a data loss (scheduler.dataloss)."""

from __future__ import annotations

import pytest

from scheduler.dataloss import ADVICE, Loss, assess, reissued, went_back


@pytest.mark.parametrize(
    ("seen", "now", "what"),
    [
        ((54, 9), (54, 9), None),
        ((54, 9), (60, 12), None),  # growing: elections and edits
        ((0, 0), (0, 0), None),  # a replica that has seen nothing yet
        ((54, 9), (1, 0), "epoch went from 54 to 1"),  # restart without persistence
        ((54, 9), (0, 0), "epoch went from 54 to 0"),  # FLUSHALL, before anyone re-leads
        ((54, 9), (54, 8), "revision went from 9 to 8"),  # a failover lost an edit
    ],
)
def test_went_back(seen: tuple[int, int], now: tuple[int, int], what: str | None) -> None:
    assert went_back(*seen, *now) == what


def test_an_acquisition_must_issue_an_epoch_above_every_one_seen() -> None:
    assert reissued(54, 55) is None
    assert reissued(0, 1) is None
    assert reissued(54, 1) == "epoch went from 54 to 1"
    assert reissued(54, 54) == "epoch 54 was issued twice (the increment that issued it first was lost)"


def test_assess_prefers_the_marker_then_the_replicas_memory() -> None:
    marker = Loss("epoch went from 54 to 1", "r1", "2026-12-04T16:00:00.000Z")
    assert assess(marker, 60, {}) is marker
    assert assess(None, 1, {"r1": 1, "r2": 54}) == Loss("epoch went from 54 to 1", "r2")
    assert assess(None, None, {"r1": 0}) == Loss("the epoch counter is gone while replicas are running")
    assert assess(None, 54, {"r1": 54}) is None
    assert assess(None, None, {}) is None  # nothing ever ran here: an empty namespace is fine


def test_the_line_says_what_to_do() -> None:
    assert Loss("epoch went from 54 to 1").line() == f"data_lost: epoch went from 54 to 1 ({ADVICE})"
    assert ADVICE == "Redis lost rqbeat's data: re-apply your schedule files"
