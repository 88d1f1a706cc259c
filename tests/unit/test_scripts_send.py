"""scripts.send: a command packed in one hiredis call is, byte for byte, what redis-py's
own packer sends; without the hiredis packer, redis-py sends it."""

from __future__ import annotations

import zlib
from typing import Any

from redis.connection import Connection, PythonRespSerializer

from scheduler import scripts

#: Shaped like a dispatch write: text, non-ASCII text, compressed bytes, ints, floats.
COMMAND = (
    "EVALSHA",
    "0" * 40,
    2,
    "rqbeat:due",
    "rqbeat:leader",
    "ré-1",
    zlib.compress(b"[1]"),
    7,
    1.5,
    -3,
    "",
)


class Capturing(Connection):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self.sent: list[list[bytes]] = []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.sent.append(list(command))


def test_the_one_call_pack_sends_what_redis_py_sends() -> None:
    conn = Capturing()
    scripts.send(conn, COMMAND)
    assert b"".join(conn.sent[0]) == b"".join(conn.pack_command(*COMMAND))  # type: ignore[no-untyped-call]
    assert b"".join(conn.sent[0]).startswith(b"*11\r\n$7\r\nEVALSHA\r\n")


def test_without_the_hiredis_packer_redis_py_packs_it() -> None:
    encode = Connection().encoder.encode  # type: ignore[no-untyped-call]
    conn = Capturing(command_packer=PythonRespSerializer(6000, encode))
    scripts.send(conn, COMMAND)
    assert b"".join(conn.sent[0]) == b"".join(conn.pack_command(*COMMAND))  # type: ignore[no-untyped-call]
