"""The guard key added to script calls on a Redis Cluster slot (scheduler.slotguard)."""

from __future__ import annotations

from typing import Any

from scheduler.slotguard import GuardedPacker, guard_key, with_guard
from scheduler.slots import slot_of

GUARD = "{rqbeat}:events"


def test_a_script_call_declares_the_guard_after_its_own_keys() -> None:
    args = ("EVALSHA", "abc123", 2, "{rqbeat}:due", "{rqbeat}:running", "tok", 7)
    assert with_guard(args, GUARD) == (
        "EVALSHA",
        "abc123",
        3,
        "{rqbeat}:due",
        "{rqbeat}:running",
        GUARD,
        "tok",
        7,
    )
    assert with_guard((b"evalsha", b"abc", b"0", b"x"), GUARD) == (b"evalsha", b"abc", 1, GUARD, b"x")
    assert with_guard(("EVAL", "return 1", "0"), GUARD) == ("EVAL", "return 1", 1, GUARD)


def test_other_commands_are_sent_as_they_are() -> None:
    for args in (("HSET", "k", "f", "v"), ("PING",), ("SCRIPT", "LOAD", "return 1"), ("MULTI",)):
        assert with_guard(args, GUARD) == args


def test_the_guard_is_in_the_namespaces_slot() -> None:
    assert guard_key("{rqbeat}") == GUARD
    assert slot_of(guard_key("app:{beat}")) == slot_of("app:{beat}:due")


class _Recorder:
    def pack(self, *args: Any) -> Any:
        return args


def test_the_packer_guards_what_it_packs() -> None:
    packer = GuardedPacker(_Recorder(), GUARD)
    assert packer.pack("EVALSHA", "s", 1, "{rqbeat}:due") == ("EVALSHA", "s", 2, "{rqbeat}:due", GUARD)
    assert packer.pack("GET", "{rqbeat}:due") == ("GET", "{rqbeat}:due")
