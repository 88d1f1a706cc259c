"""When jobs land in an RQ queue, as Redis tells a subscriber: keyspace notifications.

The server must run with ``notify-keyspace-events Kl`` (:data:`KEYSPACE_EVENTS`): every
list command on ``rq:queue:<name>`` then publishes its name on
``__keyspace@0__:rq:queue:<name>``. The watcher reads a raw socket in a thread and stamps
each push with the wall clock (the same clock the local Redis's ``TIME`` reads) right
after ``recv`` returns, so the landing time is the push's time plus one loopback
delivery (tens of µs), the same for every scheduler measured. It knows nothing about
who pushed: rqbeat, RQ's cron and anything else are observed alike.
"""

from __future__ import annotations

import bisect
import socket
import threading
import time

#: ``redis-server`` flags that make list commands publish keyspace events.
KEYSPACE_EVENTS = ("--notify-keyspace-events", "Kl")
_PUSHES = (b"rpush", b"lpush")


class LandingWatch(threading.Thread):
    """Wall-clock times (epoch seconds) at which a push to ``rq:queue:<queue>`` was seen."""

    def __init__(self, port: int, queue: str = "default", db: int = 0) -> None:
        super().__init__(daemon=True)
        channel = f"__keyspace@{db}__:rq:queue:{queue}".encode()
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(channel), channel))
        self.landed: list[float] = []
        self._closing = threading.Event()

    def run(self) -> None:
        buf = b""
        self.sock.settimeout(0.2)
        while not self._closing.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            seen = time.time()
            if not chunk:
                return
            buf += chunk
            # a message is "*3 $7 message $<n> <channel> $<m> <event>"; its last line
            # (the event) is all that is needed; subscribe replies end in ":1"
            *lines, buf = buf.split(b"\r\n")
            self.landed += [seen for line in lines if line in _PUSHES]

    def close(self) -> None:
        self._closing.set()
        self.join(2)
        self.sock.close()


def lags_ms(landed_s: list[float], fires_ms: list[int]) -> list[float]:
    """Each landing's lag behind the nominal fire nearest to it (ms): negative when a
    job landed before its time, which shows as such instead of as a second late.
    ``fires_ms`` need not be sorted; landings with no fire at all are left out."""
    fires = sorted(fires_ms)
    out = []
    for at in landed_s:
        at_ms = at * 1000
        i = bisect.bisect_right(fires, at_ms)
        near = [f for f in fires[max(0, i - 1) : i + 1]]
        if near:
            out.append(at_ms - min(near, key=lambda f: abs(at_ms - f)))
    return out
