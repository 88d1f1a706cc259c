"""Job functions the integration tests schedule. They record each run in Redis
(the job's own connection) under the fire's idempotency key, so a test can count
runs per fire."""

from __future__ import annotations

import os
import time

from rq import get_current_job

from workers import current_fire, dead_man


def record(tag: str = "runs") -> str:
    """Count this run under ``<tag>`` by idempotency key; return the key."""
    fire = current_fire()
    job = get_current_job()
    assert fire is not None and job is not None
    pipe = job.connection.pipeline()
    pipe.hincrby(f"test:{tag}", fire.key, 1)
    pipe.rpush(f"test:{tag}:order", f"{fire.key}|{fire.attempt}|{time.time():.6f}")
    pipe.execute()
    return fire.key


def fail(message: str = "boom") -> None:
    """Always raises (after recording the attempt)."""
    record("failures")
    raise RuntimeError(message)


def slow(seconds: float, tag: str = "runs") -> str:
    """Records the start, then sleeps: a run that is in flight for a while."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush(f"test:{tag}:started", job.id)
    time.sleep(seconds)
    return record(tag)


def fail_until(attempt: int) -> str:
    """Fails for attempts before ``attempt``, then succeeds."""
    fire = current_fire()
    assert fire is not None
    if fire.attempt < attempt:
        record("failures")
        raise RuntimeError(f"attempt {fire.attempt} fails")
    return record()


def fail_while(key: str) -> str:
    """Fails while ``key`` exists in Redis; a test deletes it to let runs succeed."""
    job = get_current_job()
    assert job is not None
    if job.connection.exists(key):
        raise RuntimeError(f"{key} is set")
    return record()


def pinged(url: str, fail: bool = False) -> str:
    """The README's dead-man recipe (workers.dead_man) around a recorded run."""
    with dead_man(url):
        if fail:
            raise RuntimeError("the work failed")
        return record()


def gated(tag: str) -> str:
    """Records the start, then waits until the test opens the gate (one token per
    run, ``RPUSH test:<tag>:gate``): a run that stays in flight exactly as long as the
    test needs, with no timing margins."""
    job = get_current_job()
    assert job is not None
    job.connection.rpush(f"test:{tag}:started", job.id)
    if job.connection.blpop([f"test:{tag}:gate"], timeout=60) is None:
        raise RuntimeError(f"the gate of {tag!r} never opened")
    return record(tag)


def exclusive(seconds: float, tag: str = "runs") -> str:
    """Like :func:`slow`, and counts overlaps: a run that starts while another run under
    ``tag`` is still in flight adds one to ``test:<tag>:overlaps`` (clock-free)."""
    job = get_current_job()
    assert job is not None
    conn = job.connection
    if int(conn.incr(f"test:{tag}:inflight")) > 1:
        conn.incr(f"test:{tag}:overlaps")
    conn.rpush(f"test:{tag}:started", job.id)
    try:
        time.sleep(seconds)
    finally:
        conn.decr(f"test:{tag}:inflight")
    return record(tag)


def touch(path: str, seconds: float = 0.0) -> str:
    """A run whose side effect lies outside Redis, so it can end while Redis is away:
    appends ``started <key>`` to ``path``, sleeps ``seconds``, appends ``done <key>``."""
    fire = current_fire()
    assert fire is not None
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"started {fire.key}\n")
    time.sleep(seconds)
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"done {fire.key}\n")
    return fire.key


def hang_first(path: str) -> str:
    """Attempt 1 appends ``started <key> attempt=1 pid=<pid>`` to ``path`` and hangs
    (60 s at most) for the test to kill its work horse; later attempts append
    ``done <key> attempt=<n>`` and return."""
    fire = current_fire()
    assert fire is not None
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"started {fire.key} attempt={fire.attempt} pid={os.getpid()}\n")
    if fire.attempt == 1:
        time.sleep(60)
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"done {fire.key} attempt={fire.attempt}\n")
    return fire.key
