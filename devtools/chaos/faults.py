"""The faults the guarantees grew to cover, injected by :class:`devtools.chaos.driver.Rig`.

Each function injects one fault, keeps it for a while where that is the point,
undoes it and returns a :class:`Fault` with wall-clock times:

* ``worker-skew`` — a worker (``rqbeat worker`` or the plain ``rq worker``) replaced
  by one whose wall clock is 300 s ahead or behind (``devtools/skewclock``), kept
  ``hold_s``, then replaced by a true one. Nothing may change: liveness is judged
  from Redis, not from the worker's clock;
* ``replica-skew`` — every replica restarted with its clock 300 s off (ahead and
  behind, so they also disagree with each other), the leader last, so a skewed one
  leads for ``hold_s``; then all restarted true. Nothing may change: replicas decide
  by Redis ``TIME``;
* ``redis-restart`` — a graceful restart with AOF: nothing is lost;
* ``redis-wipe`` — a restart without persistence: every schedule vanishes. ``rqbeat
  check`` must report ``data_lost``; then the rig re-applies the schedule file
  (``rqbeat apply``, as the README tells users) and clears the marker (``rqbeat check
  --repair``). ``Fault.reported`` says whether check reported it;
* ``maxmemory`` — ``maxmemory`` set just above what Redis uses for a few seconds:
  every write refused with OOM, then memory freed;
* ``edit-storm`` — for ``hold_s``, pauses, resumes, triggers and edits (a description,
  a timeout: never the trigger, which the audit knows) through the public API and
  the CLI; every schedule paused is resumed before the fault ends;
* ``overload`` — every worker but one stopped (warm shutdown: no run is cut short)
  for ``hold_s``, with a burst of triggers at the start; then the workers restart.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis.exceptions

from devtools.chaos.audit import Fault
from devtools.cluster import kill_group
from devtools.processes import wait_for
from scheduler import Client
from scheduler.errors import RqbeatError

if TYPE_CHECKING:
    from devtools.chaos.driver import Rig

log = logging.getLogger(__name__)

#: How far a skewed clock is off, seconds (either way).
SKEW_S = 300.0
#: maxmemory is set this far above what Redis uses: full at the next few writes.
MEMORY_HEADROOM_BYTES = 32 * 1024
#: How long Redis stays full.
FULL_S = 4.0
#: How long ``rqbeat check`` gets to report a wipe (a replica notices at its next
#: election, within a lease, or at its heartbeat, within 15 s).
REPORT_TIMEOUT_S = 40.0
#: A warm shutdown waits for the job in hand; the slowest chaos job takes 4 s.
WARM_STOP_S = 30.0
#: Edits per second in an edit storm, and triggers in an overload's burst.
STORM_RATE = 10
BURST = 30


def now_ms() -> int:
    return int(time.time() * 1000)


def skew_worker(rig: Rig) -> Fault:
    offset = rig.rng.choice((-SKEW_S, SKEW_S))
    slot = rig.rng.choice((*sorted(rig.workers), "plain"))
    start = now_ms()
    name = _replace_worker(rig, slot, offset)
    time.sleep(rig.hold_s)  # the skewed worker runs jobs meanwhile: the fault itself
    _replace_worker(rig, slot, None)
    return Fault("worker-skew", f"{name} ({offset:+.0f} s)", start, now_ms())


def _replace_worker(rig: Rig, slot: str, offset: float | None) -> str:
    """Stop a worker gracefully (its run in hand finishes) and start another in its slot."""
    if slot == "plain":
        if rig.plain is not None:
            rig.plain.stop(WARM_STOP_S)
        rig.start_plain(offset)
        return rig.plain_name
    rig.workers[slot].stop(WARM_STOP_S)
    rig.start_worker(slot, offset)
    return rig.worker_names[slot]


def skew_replicas(rig: Rig) -> Fault:
    offsets = [SKEW_S, -SKEW_S, SKEW_S]
    rig.rng.shuffle(offsets)
    start = now_ms()
    _restart_replicas(rig, offsets)
    leader = rig.wait_leader()
    skewed = f"{rig.nodes[leader]} leading"
    time.sleep(rig.hold_s)  # skewed replicas lead and dispatch: the fault itself
    _restart_replicas(rig, [None, None, None])
    rig.wait_leader()
    return Fault("replica-skew", f"{skewed}, offsets {offsets}", start, now_ms())


def _restart_replicas(rig: Rig, offsets: Sequence[float | None]) -> None:
    """Restart every replica with the given clock offsets, the leader last."""
    leader = rig.wait_leader()
    order = sorted(rig.replicas, key=lambda slot: slot == leader)
    for slot, offset in zip(order, offsets, strict=True):
        kill_group(rig.replicas[slot])
        rig.start_replica(slot, offset)


def restart_redis(rig: Rig) -> Fault:
    """SIGTERM and start again: with AOF, Redis keeps every acknowledged write."""
    start = now_ms()
    rig.server.restart()
    return Fault("redis-restart", "redis", start, now_ms())


def wipe_redis(rig: Rig) -> Fault:
    """Restart Redis without its data, as one without persistence would come back."""
    start = now_ms()
    rig.server.stop()
    for name in ("appendonlydir", "appendonly.aof", "dump.rdb"):
        path = rig.server.workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    rig.server.start()
    reported = _check_reports_loss(rig)
    if not reported:
        rig.incidents.append("redis-wipe: rqbeat check never reported data_lost")
    rig.apply_fleet()  # what the README tells users to do
    end = now_ms()
    repaired = rig.cli("check", "--repair", "--yes")
    log.info("redis-wipe: check --repair exit %d: %s", repaired.returncode, repaired.stdout.strip()[-200:])
    return Fault("redis-wipe", "redis", start, end, reported=reported)


def _check_reports_loss(rig: Rig) -> bool:
    def reported() -> bool:
        done = rig.cli("check", "--health-only", timeout=30)
        return done.returncode != 0 and "data_lost" in done.stdout + done.stderr

    with contextlib.suppress(AssertionError):
        return wait_for(reported, timeout=REPORT_TIMEOUT_S, interval=0.5, what="check to report data_lost")
    return False


def fill_memory(rig: Rig) -> Fault:
    start = now_ms()
    used = int(rig.conn.info("memory")["used_memory"])
    rig.conn.config_set("maxmemory", used + MEMORY_HEADROOM_BYTES)
    try:
        time.sleep(FULL_S)  # Redis full: the fault itself
    finally:
        rig.conn.config_set("maxmemory", 0)
    return Fault("maxmemory", f"redis ({used + MEMORY_HEADROOM_BYTES} bytes)", start, now_ms())


def edit_storm(rig: Rig) -> Fault:
    """Pauses, resumes, triggers and edits for ``hold_s``; all paused are resumed at the end."""
    client = Client(rig.conn, rig.keys.namespace)
    paused: list[str] = []
    start, done = now_ms(), 0
    deadline = time.monotonic() + rig.hold_s
    while time.monotonic() < deadline:
        sid = rig.rng.choice(rig.schedule_ids)
        action = rig.rng.choice(("pause", "resume", "trigger", "edit", "cli"))
        if action == "resume" and paused:
            sid = paused.pop(rig.rng.randrange(len(paused)))
        with contextlib.suppress(RqbeatError, redis.exceptions.RedisError):
            _storm_step(rig, client, action, sid, paused=paused, n=done)
            done += 1
        time.sleep(1 / STORM_RATE)  # the storm's pace, not a wait
    for sid in paused:
        _resume(client, sid)
    return Fault("edit-storm", f"{done} edits", start, now_ms())


def _storm_step(rig: Rig, client: Client, action: str, sid: str, *, paused: list[str], n: int) -> None:
    if action == "pause":
        if client.pause(sid):
            paused.append(sid)
    elif action == "resume":
        client.resume(sid)
    elif action == "trigger":
        client.trigger(sid)
    elif action == "edit":
        client.edit(sid, {"description": f"edit storm {n}"})
    else:  # the same through the CLI, as an operator types it
        verb = rig.rng.choice(("trigger", "set"))
        args = ("set", sid, "--timeout", f"{60 + n % 7}s") if verb == "set" else ("trigger", sid)
        rig.cli(*args, timeout=30)


def _resume(client: Client, sid: str) -> None:
    """Resume, waiting out a full or restarting Redis: a paused schedule left behind
    would read as one nobody paused on purpose."""

    def resumed() -> bool:
        try:
            client.resume(sid)
        except (RqbeatError, redis.exceptions.RedisError) as exc:
            log.info("edit storm: resume of %s failed, again: %s", sid, exc)
            return False
        return True

    wait_for(resumed, timeout=60, interval=0.5, what=f"resume of {sid}")


def overload(rig: Rig) -> Fault:
    """One worker left for ``hold_s``, and a burst of triggers on top."""
    start = now_ms()
    stopped = [slot for slot in sorted(rig.workers) if slot != min(rig.workers)]
    for slot in stopped:
        rig.workers[slot].stop(WARM_STOP_S)
    if rig.plain is not None:
        rig.plain.stop(WARM_STOP_S)
    client = Client(rig.conn, rig.keys.namespace)
    for sid in rig.rng.sample(rig.schedule_ids, min(BURST, len(rig.schedule_ids))):
        with contextlib.suppress(RqbeatError):  # running, paused: not triggerable now
            client.trigger(sid)
    time.sleep(rig.hold_s)  # one worker against the whole load: the fault itself
    for slot in stopped:
        rig.start_worker(slot)
    rig.start_plain()
    return Fault("overload", f"{len(stopped) + 1} of {len(rig.workers) + 1} workers stopped", start, now_ms())
