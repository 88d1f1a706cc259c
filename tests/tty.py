"""Reading what a child process writes to a pseudo-terminal (colour and progress bars
appear only on a terminal)."""

from __future__ import annotations

import os
import time


def drain(fd: int, timeout_s: float = 60.0) -> bytes:
    """Everything written to the terminal ``fd`` (the parent's side) until the child
    closes its side or ``timeout_s`` passes; closes ``fd``."""
    out = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    return bytes(out)
