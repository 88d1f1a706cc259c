"""``rqbeat status`` as text: readable at a glance, problems in colour."""

from __future__ import annotations

from scheduler import clockskew
from scheduler.cli.render import Cell, age, duration, relative, table_lines, toned
from scheduler.dataloss import ADVICE, Loss
from scheduler.engine.service import HEARTBEAT_S
from scheduler.health import Health
from scheduler.ops.status import StatusReport, WorkerClock

#: A replica silent for longer than this has probably died (it reports every HEARTBEAT_S).
STALE_MS = 2 * HEARTBEAT_S * 1000


def status_lines(report: StatusReport, health: Health | None = None) -> list[str]:
    """The summary (with the health findings), then the replicas and the RQ queues as
    tables."""
    lines = [
        _field("leader", _leader(report)),
        _field("schedules", _schedules(report)),
        _field("overdue", _overdue(report)),
        _field("rq", _rq(report)),
        *(_field("", Cell(f"warning: {w}", "warn").render(0)) for w in report.rq_warnings),
    ]
    if health is not None:
        lines += _health(report, health)
    lines.append("")
    if report.data_lost is not None:  # first: the counts below are not the whole truth
        lines[:0] = [_field("data lost", _data_lost(report.data_lost))]
    now = report.now_ms
    replicas: list[list[Cell | str]] = [
        [
            n.name,
            toned(n.role),
            str(n.epoch),
            Cell(relative(n.seen_ms, now), "warn" if now - n.seen_ms > STALE_MS else None),
            n.host,
            n.pid,
        ]
        for n in report.nodes
    ]
    lines += table_lines(["REPLICA", "ROLE", "EPOCH", "HEARTBEAT", "HOST", "PID"], replicas)
    if report.queues:
        queues: list[list[Cell | str]] = [
            [
                q.name,
                str(q.queued),
                str(q.started),
                Cell(str(q.failed), "bad" if q.failed else None),
                Cell(str(q.workers), "warn" if not q.workers else None),
            ]
            for q in report.queues
        ]
        lines += ["", *table_lines(["QUEUE", "QUEUED", "STARTED", "FAILED", "WORKERS"], queues)]
    if report.workers:
        workers: list[list[Cell | str]] = [[w.name, _clock(w), _measured(w, now)] for w in report.workers]
        lines += ["", *table_lines(["WORKER", "CLOCK", "MEASURED"], workers)]
    return lines


def _health(report: StatusReport, health: Health) -> list[str]:
    """Runs in flight split into queued and started, then the findings, one a line."""
    in_flight = report.counts.get("running", 0)
    queued = min(in_flight, health.queued_runs)
    runs = f"{in_flight} in flight: {queued} queued (not started by a worker), {in_flight - queued} running"
    if report.concurrent_runs:  # each allow_all run is its own, beside its schedule's
        runs += f"; {report.concurrent_runs} of allow_all schedules (rqbeat show ID)"
    lines = [_field("runs", runs)]
    if health.ok:
        return [*lines, _field("health", Cell("ok", "ok").render(0))]
    found = health.lines()
    lines.append(_field("health", Cell(f"{len(found)} finding(s) (rqbeat check)", "bad").render(0)))
    return lines + [f"  {Cell(line, 'bad').render(0)}" for line in found]


def _clock(worker: WorkerClock) -> Cell:
    """The worker's clock against Redis time: a problem beyond the tolerance."""
    if worker.offset is None:
        return Cell("not measured (plain rq worker)")
    offset_ms = worker.offset.offset_ms
    tone = "bad" if abs(offset_ms) > clockskew.TOLERANCE_MS else None
    return Cell(f"{offset_ms / 1000:+.3f}s", tone)


def _measured(worker: WorkerClock, now: int) -> str:
    return "" if worker.offset is None else relative(worker.offset.measured_ms, now)


def _field(name: str, value: str) -> str:
    return f"{name + ':':<11}{value}"


def _leader(report: StatusReport) -> str:
    if report.leader_node is None:
        return Cell("none: no replica holds the lease", "bad").render(0)
    lease = f", lease {duration(report.lease_ttl_ms)} left" if report.lease_ttl_ms is not None else ""
    return f"{toned(report.leader_node, 'ok').render(0)} (epoch {report.epoch}{lease})"


def _schedules(report: StatusReport) -> str:
    parts = []
    for state, count in report.counts.items():
        if state == "completed" and not count:
            continue  # a state most namespaces never see: named when it is there
        text = f"{count} {state}"
        if state == "due" and report.overdue:
            text += f" ({report.overdue} overdue)"
        tone = {"broken": "bad", "paused": "warn"}.get(state) if count else None
        parts.append(Cell(text, tone).render(0))
    return f"{report.total} total: " + ", ".join(parts)


def _data_lost(loss: Loss) -> str:
    seen = f", seen by {loss.node}" if loss.node else ""
    at = f" at {loss.detected_at}" if loss.detected_at else ""
    text = f"{loss.what}{seen}{at}: {ADVICE}, then clear this with rqbeat check --repair"
    return Cell(text, "bad").render(0)


def _rq(report: StatusReport) -> str:
    """This process's RQ, and how many replicas and rqbeat workers run the same."""
    here = report.rq
    same_nodes = sum(1 for n in report.nodes if n.rq == here)
    same_workers = sum(1 for w in report.rq_workers if w.rq == here)
    return (
        f"{here.label()}; the same on {same_nodes} of {len(report.nodes)} replica(s), "
        f"{same_workers} of {len(report.rq_workers)} rqbeat worker(s)"
    )


def _overdue(report: StatusReport) -> str:
    if report.oldest_overdue_ms is None:
        return "none"
    late = report.now_ms - report.oldest_overdue_ms
    tone = "warn" if late > 1000 else None
    return Cell(f"{report.oldest_overdue_id}, {age(late)} late (the oldest due fire)", tone).render(0)
