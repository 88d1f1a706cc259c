"""Pure parts of the full-memory handling: the health thresholds and the script flags."""

from __future__ import annotations

import pytest
import redis.exceptions

from scheduler import scripts
from scheduler.errors import RedisFull, RqbeatError
from scheduler.memory import FULL_RATIO, Memory, full_is_error, memory_note, memory_problem


def test_full_is_a_problem_from_the_threshold_on() -> None:
    limit = 1_000_000
    assert memory_problem(Memory(int(limit * FULL_RATIO) - 1, limit, 0)) is None
    problem = memory_problem(Memory(int(limit * FULL_RATIO), limit, 0))
    assert problem is not None and "95% of maxmemory" in problem
    assert memory_problem(Memory(10**9, 0, 5)) is None  # no maxmemory: never full


def test_past_refusals_are_a_note_only_while_not_full() -> None:
    assert memory_note(Memory(10, 100, 0)) is None
    note = memory_note(Memory(10, 100, 3))
    assert note is not None and "refused 3 write(s)" in note
    assert memory_note(Memory(99, 100, 3)) is None  # the problem says it already


def test_fits() -> None:
    assert Memory(90, 100, 0).fits(10) and not Memory(90, 100, 0).fits(11)
    assert Memory(10**9, 0, 0).fits(10**9)


def test_oom_becomes_redis_full() -> None:
    with pytest.raises(RedisFull) as caught, full_is_error("pausing schedule 'a'"):
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    assert isinstance(caught.value, RqbeatError)
    assert str(caught.value).startswith(
        "Redis is out of memory (used_memory reached maxmemory): pausing schedule 'a' was refused, "
        "nothing was written; free memory"
    )


@pytest.mark.parametrize("flags", list(scripts.Flags))
def test_flags_are_the_first_line(flags: scripts.Flags) -> None:
    text = scripts.flagged(scripts.NUDGE, flags)
    first, _, body = text.partition("\n")
    assert first.startswith("#!lua") and first == str(flags)
    assert body == scripts.NUDGE  # the body itself is untouched
