"""The Python side of the stored and scripted contracts: the errors a stored
definition decodes to, the named script replies and states, the job meta layout."""

from __future__ import annotations

import json

import pytest

import scheduler
from scheduler.cli.rows import Definitions
from scheduler.errors import CorruptDefinition, RqbeatError
from scheduler.records import decode_definition


@pytest.mark.parametrize(
    ("definition", "reason"),
    [
        (None, "no 'definition' field"),
        ("{", "not valid JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({"id": "other", "target": "a.b"}), "does not match the key"),
        (json.dumps({"target": "a.b", "every": "0s"}), "every"),
    ],
)
def test_a_stored_definition_that_cannot_be_used_is_one_error_with_its_schedule(
    definition: str | None, reason: str
) -> None:
    with pytest.raises(CorruptDefinition) as caught:
        decode_definition("s1", definition)
    assert caught.value.schedule_id == "s1"
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason  # what the schedule's error field shows
    assert isinstance(caught.value, RqbeatError) and isinstance(caught.value, ValueError)


def test_a_shared_bad_shape_names_each_schedule_it_breaks() -> None:
    definitions = Definitions()
    bad = json.dumps({"target": "a.b", "every": "0s"})
    ids = []
    for schedule_id in ("first", "second"):
        with pytest.raises(CorruptDefinition) as caught:
            definitions.decode(schedule_id, bad)
        ids.append(caught.value.schedule_id)
    assert ids == ["first", "second"]


def test_the_errors_are_exported_from_the_package() -> None:
    assert scheduler.ScheduleConflict.__mro__[1] is RqbeatError
    assert scheduler.CorruptDefinition is CorruptDefinition
