"""The actions the schedule page offers, each one :class:`scheduler.store.Client` call:
the same validation and history entries as the CLI's ``pause``, ``resume``, ``trigger``.

Each is a compare-and-set on the version the page showed, checked by the store's
script in the same step as its write: an edit landing between the page load and the
click (or between any read here and the write) refuses the action with
:class:`~scheduler.errors.StaleVersion` and writes nothing."""

from __future__ import annotations

from enum import StrEnum

from scheduler.store import Client


class Action(StrEnum):
    """What the schedule page can do, each one :class:`Client` method."""

    PAUSE = "pause"
    RESUME = "resume"
    TRIGGER = "trigger"


class Outcome(StrEnum):
    """What an action did, carried by the redirect after it (``?done=``): reloading
    the page then shows the message again instead of posting the action again."""

    PAUSED = "paused"
    ALREADY_PAUSED = "already-paused"
    RESUMED = "resumed"
    NOT_PAUSED = "not-paused"
    TRIGGERED = "triggered"

    def say(self, schedule_id: str) -> str:
        return _SAY[self].format(id=schedule_id)


_SAY = {
    Outcome.PAUSED: "paused {id}",
    Outcome.ALREADY_PAUSED: "{id} was already paused",
    Outcome.RESUMED: "resumed {id}",
    Outcome.NOT_PAUSED: "{id} was not paused",
    Outcome.TRIGGERED: "triggered {id}: it runs now, once",
}


def perform(client: Client, action: Action, schedule_id: str, version: int) -> Outcome:
    """Do ``action`` if the schedule is still at ``version``;
    :class:`~scheduler.errors.StaleVersion` when it is not,
    :class:`~scheduler.errors.RqbeatError` when the store refuses it otherwise."""
    if action is Action.PAUSE:
        return Outcome.PAUSED if client.pause(schedule_id, version=version) else Outcome.ALREADY_PAUSED
    if action is Action.RESUME:
        return Outcome.RESUMED if client.resume(schedule_id, version=version) else Outcome.NOT_PAUSED
    client.trigger(schedule_id, version=version)
    return Outcome.TRIGGERED
