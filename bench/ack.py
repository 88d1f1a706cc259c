"""Scenario 5, ack latency: from the end of a job to its schedule being re-armed.

One ``every = "1s"`` schedule running ``bench.jobs.noop``, one replica, one worker.
Job end = the RQ job's ``ended_at`` (µs, the worker's clock, set right after the job
function returns). Re-armed = the ID of the schedule's ``succeeded`` history entry,
written by the ACK script in the same transaction that moves the schedule back to
the due set (Redis's clock, 1 ms resolution, taken as ID + 0.5 ms). Both clocks are
this machine's. The first 2 runs are warm-up.

* ``rqbeat worker`` (``workers.Worker``): the ACK joins RQ's own "job finished"
  MULTI/EXEC. 20 runs (5 with --quick).
* plain ``rq worker -S rq.serializers.JSONSerializer``: nothing acks until the
  leader's watchdog looks at the run (first look 1 s after dispatch, then at growing
  intervals). 10 runs (3 with --quick).
"""

from __future__ import annotations

from redis import Redis
from rq.utils import utcparse

from bench.core import Context, Result, Target, percentile
from bench.env import history, stack, wait_for
from scheduler import Client, Schedule
from scheduler.records import text

NAME = "ack"
TITLE = "5. Ack latency"
WARMUP = 2


def succeeded(conn: Redis, schedule_id: str) -> list[tuple[float, str]]:
    """(landing ms, job id) of the schedule's ``succeeded`` history entries."""
    return [(e.at_ms + 0.5, e.fields["job_id"]) for e in history(conn, schedule_id) if e.event == "succeeded"]


def measure(ctx: Context, res: Result, kind: str, runs: int) -> None:
    tag = f"ack-{kind.replace(' ', '-')}"
    with ctx.redis(tag) as server, stack(ctx.workdir / tag, server) as st:
        conn = server.client()
        if kind == "rqbeat worker":
            st.worker("w1")
        else:
            st.plain_rq_worker("w1")
        Client(conn).upsert(Schedule(id="ack-1", target="bench.jobs.noop", every_ms=1000))
        st.replica("r1")
        ctx.log(f"ack latency with {kind}: {runs} runs")
        need = runs + WARMUP
        wait_for(lambda: len(succeeded(conn, "ack-1")) >= need, need * 4 + 30, 0.5, f"{need} acks")
        rows = succeeded(conn, "ack-1")[WARMUP:need]
        ended = [text(conn.hget(f"rq:job:{job_id}", "ended_at")) for _, job_id in rows]
    lat = [
        land_ms - utcparse(end).timestamp() * 1000
        for (land_ms, _), end in zip(rows, ended, strict=True)
        if end
    ]
    if len(lat) != len(rows):
        res.notes.append(f"{kind}: {len(rows) - len(lat)} runs had no ended_at (job hash gone)")
    target = Target("<=", 5, "≤ 5") if kind == "rqbeat worker" else None
    res.metric(f"{kind}: job end → re-armed p50", "ms", target=target, digits=2).values.append(
        percentile(lat, 50)
    )
    res.metric(f"{kind}: job end → re-armed p90", "ms", digits=2).values.append(percentile(lat, 90))
    res.metric(f"{kind}: job end → re-armed max", "ms", digits=2).values.append(max(lat))
    res.notes.append(f"{kind}: {len(lat)} runs measured.")


def run(ctx: Context) -> Result:
    res = Result(NAME, TITLE, __doc__ or "")
    measure(ctx, res, "rqbeat worker", 5 if ctx.quick else 20)
    measure(ctx, res, "plain rq worker", 3 if ctx.quick else 10)
    return res
