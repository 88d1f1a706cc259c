"""Where replicas, workers and ``rqbeat status`` disagree on RQ (scheduler.ops.rqinfo)."""

from __future__ import annotations

import pytest

from scheduler import rqkeys
from scheduler.ops.rqinfo import RqWorker, disagreements
from scheduler.rqkeys import RqIdentity

LOW = RqIdentity("2.12.0", "rq")
HIGH = RqIdentity("3.0.0", "rq")
PREFIXED = RqIdentity("3.0.0", "{app}")


@pytest.fixture(autouse=True)
def _no_prefix_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rqkeys.PREFIX_ENV, raising=False)


def worker(name: str, rq: RqIdentity) -> RqWorker:
    return RqWorker(name, ("default",), rq)


def test_agreement_is_silent() -> None:
    assert disagreements(HIGH, {"r1": HIGH, "r2": HIGH}, [worker("w1", HIGH), worker("w2", HIGH)]) == []


def test_a_replica_that_recorded_nothing_is_not_judged() -> None:
    assert disagreements(HIGH, {"old": None}, [worker("w1", LOW)]) == []


def test_workers_under_another_prefix_never_see_the_replicas_jobs() -> None:
    found = disagreements(
        HIGH, {"r1": HIGH}, [worker("w2", PREFIXED), worker("w1", PREFIXED), worker("w3", HIGH)]
    )
    assert found == ["replica r1 uses RQ key prefix 'rq' but workers w2, w1 '{app}': they never see its jobs"]


def test_another_rq_release_on_the_workers_is_reported() -> None:
    assert disagreements(HIGH, {"r1": HIGH}, [worker("w1", LOW)]) == [
        "replica r1 runs RQ 3.0.0 but worker w1 RQ 2.12.0"
    ]


def test_a_replica_under_another_prefix_than_this_process() -> None:
    found = disagreements(HIGH, {"r1": PREFIXED}, [worker("w1", PREFIXED)])
    assert found == [
        "replica r1 uses RQ key prefix '{app}', this rqbeat 'rq': run it with RQ_KEY_PREFIX={app}"
    ]


def test_a_prefix_this_rq_ignores(monkeypatch: pytest.MonkeyPatch) -> None:
    # set after RQ read it (at import), so RQ goes on with 'rq', as 2.12 always does
    monkeypatch.setenv(rqkeys.PREFIX_ENV, "elsewhere")
    monkeypatch.setattr(rqkeys, "PREFIX", rqkeys.DEFAULT_PREFIX)
    assert disagreements(LOW, {}, []) == [
        "RQ_KEY_PREFIX=elsewhere is set, but RQ 2.12.0 has no such setting (uses 'rq')"
    ]


def test_every_rq_name_is_under_rqs_own_prefix() -> None:
    """The names rqbeat uses come from RQ's classes and agree with RQ's prefix."""
    names = [
        rqkeys.job("j"), rqkeys.queue("q"), rqkeys.QUEUES, rqkeys.WORKERS, rqkeys.intermediate("q"),
        rqkeys.started("q"), rqkeys.failed("q"), rqkeys.executions("j"), rqkeys.workers_of("q"),
        rqkeys.worker("w"), rqkeys.PUBSUB_PATTERN,
    ]  # fmt: skip
    assert all(name.startswith(f"{rqkeys.PREFIX}:") for name in names), names
    assert rqkeys.started("q") == f"{rqkeys.PREFIX}:wip:q"
    assert rqkeys.intermediate("q") == f"{rqkeys.PREFIX}:queue:q:intermediate"
