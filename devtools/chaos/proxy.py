"""A loopback TCP proxy that a chaos run uses to cut one replica off from Redis.

Each replica talks to Redis through its own :class:`TcpProxy`, so the driver can
partition exactly one of them while the others (and the workers, which connect
directly) carry on. Two kinds of cut:

* :meth:`TcpProxy.partition` — packets stop arriving, connections stay open: a
  client's next read hangs until its socket timeout. Bytes sent meanwhile are held
  and delivered, in order, by :meth:`TcpProxy.heal` — like TCP retransmitting after a
  partition heals. So a command sent by a leader just before the cut (an EXEC) can
  reach Redis *late*, after another replica took over: fencing must make it harmless.
* :meth:`TcpProxy.reset` — every open connection is reset (RST) and new connections
  are refused until :meth:`TcpProxy.heal`: a crashed middlebox or a firewall reject.

Two threads per connection, blocking reads, no polling. Loopback only.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PASS, HOLD, REJECT = "pass", "hold", "reject"
_CHUNK = 65_536


def _abort(sock: socket.socket | None) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', not a clean EOF."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        # close() alone does not wake a thread blocked in recv() on Linux; SHUT_RD
        # does, and sends nothing, so the close below still goes out as a RST.
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class _Pipe:
    """One direction of a link: bytes held while partitioned, and whether src ended."""

    held: bytearray = field(default_factory=bytearray)
    eof: bool = False
    #: Held across take-and-send, so a heal and a pump never reorder bytes.
    sending: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Link:
    client: socket.socket
    upstream: socket.socket | None = None
    to_upstream: _Pipe = field(default_factory=_Pipe)
    to_client: _Pipe = field(default_factory=_Pipe)
    closed: bool = False


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port`` until cut."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._mode = PASS
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._accepting = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._accepting.start()

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def partition(self) -> None:
        """Stop delivering bytes both ways; connections stay open, bytes are held."""
        with self._lock:
            self._mode = HOLD

    def reset(self) -> None:
        """Reset every connection and refuse new ones until :meth:`heal`."""
        with self._lock:
            self._mode = REJECT
            links, self._links = self._links, []
        for link in links:
            self._close(link)

    def heal(self) -> None:
        """Forward again; bytes held during a partition are delivered first, in order."""
        with self._lock:
            self._mode = PASS
            links = list(self._links)
        for link in links:
            self._flush(link)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset()

    # -- internals ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                mode = self._mode
            if mode == REJECT:
                _abort(client)
                continue
            link = _Link(client)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._start_link, args=(link,), daemon=True).start()

    def _start_link(self, link: _Link) -> None:
        try:
            link.upstream = socket.create_connection(self.target, timeout=5)
            link.upstream.settimeout(None)
        except OSError:  # Redis is down: the client sees a reset, as it would without us
            self._close(link)
            return
        threading.Thread(
            target=self._pump, args=(link, link.client, link.to_upstream, True), daemon=True
        ).start()
        self._pump(link, link.upstream, link.to_client, False)

    def _pump(self, link: _Link, src: socket.socket, pipe: _Pipe, upward: bool) -> None:
        while not link.closed:
            try:
                chunk = src.recv(_CHUNK)
            except OSError:
                chunk = b""
            with self._lock:
                if chunk:
                    pipe.held += chunk
                else:
                    pipe.eof = True
                passing = self._mode == PASS
            if passing:
                self._deliver(link, pipe, upward)
            if not chunk:
                return

    def _flush(self, link: _Link) -> None:
        self._deliver(link, link.to_upstream, True)
        self._deliver(link, link.to_client, False)

    def _deliver(self, link: _Link, pipe: _Pipe, upward: bool) -> None:
        """Send what ``pipe`` holds; on EOF pass the half-close on (FIN, like TCP)."""
        dst = link.upstream if upward else link.client
        with pipe.sending:
            with self._lock:
                data, pipe.held = bytes(pipe.held), bytearray()
                eof = pipe.eof
            try:
                if dst is not None and data:
                    dst.sendall(data)
                if dst is not None and eof:
                    dst.shutdown(socket.SHUT_WR)
            except OSError:
                self._close(link)
                return
        if link.to_upstream.eof and link.to_client.eof:
            self._close(link)

    def _close(self, link: _Link) -> None:
        link.closed = True
        _abort(link.client)
        _abort(link.upstream)
        with self._lock:
            if link in self._links:
                self._links.remove(link)
