"""Least-privilege Redis ACL users for the scheduler and for workers.

The one place the rules live: ``rqbeat acl ROLE`` prints them, the README quotes
that output, and ``tests/integration/test_acl.py`` applies them to a real server
and runs a replica and a worker as those users, so docs and code cannot drift.

What each role needs, and why:

=============  ==============================================================
scheduler      all of ``<ns>:*`` (lease, epoch, schedules, sets, heartbeats);
               ``<rq>:*`` (RQ's enqueue writes job hashes and queues; the
               watchdog reads job state, executions and heartbeats);
               channels ``<ns>:events`` (waits for edits and acks) and
               ``<ns>:alerts`` (an alert pushed wakes the alerter)
worker         ``<rq>:*`` (RQ's own worker); of rqbeat only what the atomic ack
               and the failure nudge touch: ``<ns>:schedule:*``, ``<ns>:due``,
               ``<ns>:running``, ``<ns>:history:*`` (and ``<ns>:events`` as a
               key name: the scripts pass it in KEYS), and the worker's own
               records in ``<ns>:rq-workers`` and ``<ns>:clock:<worker>``; channels ``<ns>:events``,
               ``<ns>:alerts`` (an ack that pushes an alert publishes it) and
               ``<rq>:pubsub:*`` (RQ's worker commands)
both           reads, writes, MULTI/EXEC/WATCH, EVAL/EVALSHA/SCRIPT LOAD
               (rqbeat's Lua scripts), pub/sub, TIME (Redis time), INFO (RQ
               reads the server version; rqbeat reads maxmemory-policy);
               never ``@dangerous`` (FLUSHALL, CONFIG, KEYS, DEBUG, ...) nor
               FUNCTION or SCRIPT FLUSH
=============  ==============================================================

``<rq>`` is RQ's key prefix (``rq``, or RQ 3's ``RQ_KEY_PREFIX``), taken from RQ in
the process that prints the rules (:mod:`scheduler.rqkeys`): print them with the same
``RQ_KEY_PREFIX`` the replicas and workers run with.

A worker cannot take or forge the lease (``<ns>:leader``, ``<ns>:epoch``), nor add
or remove schedules (``<ns>:ids``, ``<ns>:revision``). It *can* write schedule
hashes -- the ack that RQ's success transaction carries runs on the worker's
connection -- and, like any RQ worker, RQ's queues: Redis write access is code
execution on the workers (README, Security), which no ACL on these keys changes.
Job code that uses Redis itself needs its own keys added (``~myapp:*``).
``CLIENT LIST`` stays refused (it shows every client of the server): RQ's worker
asks for it only to show its own IP address in ``rq info``, logs a warning and
carries on with "unknown".
"""

from __future__ import annotations

from scheduler import rqkeys
from scheduler.errors import ConfigError
from scheduler.keys import DEFAULT_NAMESPACE

ROLES = ("scheduler", "worker")
DEFAULT_USERS = {"scheduler": "rqbeat-scheduler", "worker": "rqbeat-worker"}

_COMMANDS = (
    "-@all",
    "+@read",
    "+@write",
    "+@transaction",
    "+@connection",
    "+@pubsub",
    "-@scripting",  # @write brings FUNCTION LOAD/DELETE/FLUSH: only the script calls below
    "-@dangerous",
    "+eval",
    "+evalsha",
    "+script|load",
    "+script|exists",
    "+time",
    "+info",
)


def acl_rules(role: str, namespace: str = DEFAULT_NAMESPACE) -> tuple[str, ...]:
    """The ``ACL SETUSER`` rules (after the user name) for ``role``, without a
    password: add one with ``ACL SETUSER <user> >secret``."""
    ns = namespace
    keys: tuple[str, ...]
    channels: tuple[str, ...]
    if role == "scheduler":
        keys = (f"~{ns}:*", f"~{rqkeys.KEY_PATTERN}")
        channels = (f"&{ns}:events", f"&{ns}:alerts")  # alerts: pushing one wakes the alerter
    elif role == "worker":
        # <ns>:events is a channel, but the scripts take it as a KEYS argument, which
        # ACLs check like a key; no key of that name is ever written.
        keys = (
            f"~{rqkeys.KEY_PATTERN}",
            f"~{ns}:schedule:*",
            f"~{ns}:due",
            f"~{ns}:running",
            f"~{ns}:history:*",
            f"~{ns}:events",
            f"~{ns}:stats",  # the ack counts itself for the metrics (scheduler.engine.clusterstats)
            f"~{ns}:alerts",  # an ack after a give-up or a break queues the recovery's alert
            f"~{ns}:failing",  # ... and keeps the per-schedule series (scheduler.engine.schedulemetrics)
            f"~{ns}:metered",
            f"~{ns}:rq-workers",  # which RQ it runs, for `rqbeat status` (workers.presence)
            f"~{ns}:clock:*",  # its clock against Redis time, for `status`/`check` (workers.clockoffset)
            f"~{ns}:queued",  # START and the ack keep the stall indexes (scheduler.health)
            f"~{ns}:stale",
            f"~{ns}:succeeded:*",  # the ack records the fire that succeeded (what a backfill skips)
            f"~{ns}:backfill:*",  # a backfill run's ack (scheduler.engine.backfiller)
            f"~{ns}:backfills",
            f"~{ns}:runs:*",  # an allow_all run's ack and nudge (scheduler.engine.concurrent)
            f"~{ns}:concurrent",
        )
        channels = (f"&{ns}:events", f"&{ns}:alerts", f"&{rqkeys.PUBSUB_PATTERN}")
    else:
        raise ConfigError("role", role, f"must be one of {', '.join(ROLES)}")
    return ("reset", "on", *_COMMANDS, "resetkeys", *keys, "resetchannels", *channels)


def setuser_command(role: str, user: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """One ``ACL SETUSER`` line, as ``redis-cli`` reads it from stdin."""
    return " ".join(("ACL", "SETUSER", user, *acl_rules(role, namespace)))
