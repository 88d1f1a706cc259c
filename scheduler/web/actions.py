"""The actions the schedule page offers, each one :class:`scheduler.store.Client` call:
the same validation and history entries as the CLI's ``pause``, ``resume``, ``trigger``
and ``backfill``.

Each is a compare-and-set on the version the page showed, checked by the store's
script in the same step as its write: an edit landing between the page load and the
click (or between any read here and the write) refuses the action with
:class:`~scheduler.errors.StaleVersion` and writes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from scheduler.backfill import parse_time
from scheduler.errors import RqbeatError
from scheduler.protocol import BackfillOverlap
from scheduler.store import Client


class Action(StrEnum):
    """What the schedule page can do, each one :class:`Client` method."""

    PAUSE = "pause"
    RESUME = "resume"
    TRIGGER = "trigger"
    BACKFILL = "backfill"


class Outcome(StrEnum):
    """What an action did, carried by the redirect after it (``?done=``): reloading
    the page then shows the message again instead of posting the action again."""

    PAUSED = "paused"
    ALREADY_PAUSED = "already-paused"
    RESUMED = "resumed"
    NOT_PAUSED = "not-paused"
    TRIGGERED = "triggered"
    BACKFILLING = "backfilling"

    def say(self, schedule_id: str) -> str:
        return _SAY[self].format(id=schedule_id)


_SAY = {
    Outcome.PAUSED: "paused {id}",
    Outcome.ALREADY_PAUSED: "{id} was already paused",
    Outcome.RESUMED: "resumed {id}",
    Outcome.NOT_PAUSED: "{id} was not paused",
    Outcome.TRIGGERED: "triggered {id}: it runs now, once",
    Outcome.BACKFILLING: "started a backfill of {id}: its progress shows below",
}


def perform(
    client: Client, action: Action, schedule_id: str, version: int, form: Mapping[str, str] | None = None
) -> Outcome:
    """Do ``action`` if the schedule is still at ``version`` (a backfill reads its
    window from ``form``); :class:`~scheduler.errors.StaleVersion` when it is not,
    :class:`~scheduler.errors.RqbeatError` when the store refuses it otherwise, or the
    form's input is bad (a ValueError too)."""
    if action is Action.BACKFILL:
        return backfill(client, schedule_id, version, form or {})
    if action is Action.PAUSE:
        return Outcome.PAUSED if client.pause(schedule_id, version=version) else Outcome.ALREADY_PAUSED
    if action is Action.RESUME:
        return Outcome.RESUMED if client.resume(schedule_id, version=version) else Outcome.NOT_PAUSED
    client.trigger(schedule_id, version=version)
    return Outcome.TRIGGERED


def backfill(client: Client, schedule_id: str, version: int, form: Mapping[str, str]) -> Outcome:
    """The "Backfill a window" form: ``from``, ``to`` (ISO; without an offset, in the
    schedule's zone), ``overlap`` and ``force``; :meth:`Client.backfill`, as the CLI."""
    record = client.get(schedule_id)
    if record.schedule is None:
        raise RqbeatError(f"schedule {schedule_id!r} is broken; apply a valid definition")
    tz = record.schedule.timezone
    start = parse_time("from", form.get("from", ""), tz)
    end = parse_time("to", form.get("to", ""), tz)
    try:
        overlap = BackfillOverlap(form.get("overlap") or BackfillOverlap.ALLOW)
    except ValueError:
        raise RqbeatError(f"overlap must be one of {', '.join(BackfillOverlap)}") from None
    force = form.get("force") == "1"
    client.backfill(schedule_id, start, end, overlap=overlap, force=force, by="web", version=version)
    return Outcome.BACKFILLING
