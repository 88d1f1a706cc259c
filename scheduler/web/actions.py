"""The actions the schedule page offers, each one :class:`scheduler.store.Client` call:
the same validation and history entries as the CLI's ``pause``, ``resume``, ``trigger``
and ``backfill``, recorded with the acting user (:func:`acting_user`) as ``by``.

Each is a compare-and-set on the version the page showed, checked by the store's
script in the same step as its write: an edit landing between the page load and the
click (or between any read here and the write) refuses the action with
:class:`~scheduler.errors.StaleVersion` and writes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scheduler.audit import parse_until
from scheduler.backfill import parse_time
from scheduler.errors import RqbeatError
from scheduler.protocol import BackfillOverlap
from scheduler.store import Client

#: ``by`` of an action authorised by the token (bearer or the unlock cookie): the token
#: names no person.
TOKEN_USER = "web-token"


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


@dataclass(frozen=True, slots=True)
class Request:
    """What an action was asked with: who (the acting user), and the form's note and
    until (pause only; empty: none)."""

    by: str
    note: str = ""
    until: str = ""
    #: the backfill form's window: from, to, overlap, force
    window: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, by: str, form: Mapping[str, str]) -> Request:
        window = {k: form.get(k, "") for k in ("from", "to", "overlap", "force")}
        return cls(
            by=by, note=form.get("note", "").strip(), until=form.get("until", "").strip(), window=window
        )


def acting_user(basic_user: str | None) -> str:
    """The basic-auth user when that is how the request was authorised, else the token's."""
    return basic_user or TOKEN_USER


def perform(
    client: Client, action: Action, schedule_id: str, asked: Request, *, now_ms: int, version: int
) -> Outcome:
    """Do ``action`` if the schedule is still at ``version``;
    :class:`~scheduler.errors.StaleVersion` when it is not,
    :class:`~scheduler.errors.RqbeatError` when the store refuses it otherwise (an
    until that is not a time or a duration in the future among them: nothing is
    written). ``now_ms`` is Redis time, the origin of a duration until."""
    if action is Action.BACKFILL:
        return backfill(client, schedule_id, version, asked)
    edit: dict[str, Any] = {"by": asked.by, "note": asked.note, "version": version}
    if action is Action.PAUSE:
        until_ms = parse_until(asked.until, now_ms) if asked.until else None
        return (
            Outcome.PAUSED if client.pause(schedule_id, until_ms=until_ms, **edit) else Outcome.ALREADY_PAUSED
        )
    if action is Action.RESUME:
        return Outcome.RESUMED if client.resume(schedule_id, **edit) else Outcome.NOT_PAUSED
    client.trigger(schedule_id, **edit)
    return Outcome.TRIGGERED


def backfill(client: Client, schedule_id: str, version: int, asked: Request) -> Outcome:
    """The "Backfill a window" form: ``from``, ``to`` (ISO; without an offset, in the
    schedule's zone), ``overlap`` and ``force``; :meth:`Client.backfill`, as the CLI."""
    form = asked.window
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
    client.backfill(schedule_id, start, end, overlap=overlap, force=force, by=asked.by, version=version)
    return Outcome.BACKFILLING
