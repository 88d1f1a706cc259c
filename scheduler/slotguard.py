"""A script never runs half on a Redis Cluster slot being resharded.

While a slot is ``MIGRATING`` its keys are split between two nodes, and Redis checks a
script's keys twice: before it runs, the keys it *declares* (``KEYS``) -- any missing
one and the call is answered ``ASK``/``TRYAGAIN`` without running; and as it runs,
each command's keys -- a key that is missing *then* (one named inside the script, like
dispatch's ``<prefix><job id>``, or one the script itself deleted and writes again)
aborts the script with "Script attempted to access a non local key" **after** its
earlier writes. Scripts are not rolled back, so that would cut a transition in half
(measured on Redis 7.0 and Valkey 9.1: ``INCR`` of a declared key, then ``SET`` of a
new key, fails with the ``INCR`` applied).

The guard closes that window: every script call sent on a slot connection
(:mod:`scheduler.slotowner`) declares one more key, :func:`guard_key` -- a name in the
namespace's slot that is never written (the events *channel*'s name). It is always
missing, so while the slot migrates Redis refuses every script before it runs (``ASK``
or ``TRYAGAIN``, :class:`~scheduler.slotowner.SlotMigrating`), and the whole step is
retried after the move; on a slot that is not migrating a missing declared key means
nothing. MULTI/EXEC needs no guard: ``EXEC`` checks all its commands' keys before it
runs any, and a script inside it carries the guard too. The scripts themselves only
ever index ``KEYS[i]``, so one more key at the end changes nothing in them.
"""

from __future__ import annotations

from typing import Any, Protocol

from scheduler.keys import Keys

#: The commands that run a script or function: ``NAME body-or-sha numkeys keys... args...``.
SCRIPT_CALLS = frozenset({b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"})


def guard_key(namespace: str) -> str:
    """The key every script call on the namespace's slot declares: the events
    channel's name, in the slot (the namespace's hash tag), never written as a key,
    and already in both ACL roles' key patterns."""
    return Keys(namespace).events


def with_guard(args: tuple[Any, ...], guard: str) -> tuple[Any, ...]:
    """``args`` of one command, with ``guard`` added to its keys when it runs a
    script; other commands unchanged. Pure."""
    if len(args) < 3:
        return args
    name = args[0].encode() if isinstance(args[0], str) else args[0]
    if not isinstance(name, bytes) or name.upper() not in SCRIPT_CALLS:
        return args
    numkeys = int(args[2])
    return (*args[:2], numkeys + 1, *args[3 : 3 + numkeys], guard, *args[3 + numkeys :])


class Packer(Protocol):
    def pack(self, *args: Any) -> Any: ...


class GuardedPacker:
    """redis-py's command packer, adding the guard to every script call it packs
    (single commands and pipelines both pack through it)."""

    def __init__(self, inner: Packer, guard: str) -> None:
        self.inner = inner
        self.guard = guard

    def pack(self, *args: Any) -> Any:
        return self.inner.pack(*with_guard(args, self.guard))
