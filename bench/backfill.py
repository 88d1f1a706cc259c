"""Scenario: backfill beside a live schedule on the same leader.

One replica, two ``rqbeat worker`` processes on the default queue, a live ``every =
"1s"`` schedule (``bench.jobs.noop``) and a minutely schedule (``bench.jobs.record``,
which counts its runs per idempotency key). First the live schedule runs alone
(20 fires; 8 with --quick) for the baseline; then ``Client.backfill`` of the
minutely schedule's last 100 minutes (100 fires) runs while the live one keeps
firing, until the backfill is done.

Live lag = landing - fire, where landing is the ID of the live schedule's
``dispatched`` history entry (Redis's clock when the dispatch transaction that
enqueues the job executed; +0.5 ms for the ID's truncation), over the live fires
that fell inside the backfill. The backfill must not starve them: target p99 ≤
50 ms. Each backfilled fire must run exactly once (counted per key by the job).
"""

from __future__ import annotations

from redis import Redis

from bench.core import Context, Result, Target, percentile
from bench.env import history, stack, wait_for, wait_role
from scheduler import Client, Schedule
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.protocol import BackfillState
from scheduler.records import text

NAME = "backfill"
TITLE = "Backfill beside a live schedule"
FIRES = 100
MINUTE_MS = 60_000
WARMUP_FIRES = 2


def live_lags(conn: Redis, since_ms: int, until_ms: int) -> list[float]:
    """Landing lag (ms) of the live schedule's fires in ``[since_ms, until_ms]``."""
    out = []
    for entry in history(conn, "live"):
        if entry.event == "dispatched":
            fire = parse_iso_ms(entry.fields["fire_at"])
            if since_ms <= fire <= until_ms:
                out.append(entry.at_ms + 0.5 - fire)
    return out


def once(ctx: Context, res: Result, rep: int) -> None:
    baseline_fires = 8 if ctx.quick else 20
    tag = f"backfill-{rep}"
    with ctx.redis(tag) as server, stack(ctx.workdir / tag, server) as st:
        conn = server.client()
        client = Client(conn)
        st.worker("w1")
        st.worker("w2")
        st.replica("r1")
        wait_role(conn, "r1", "leader")
        client.upsert(Schedule(id="live", target="bench.jobs.noop", every_ms=1000))
        client.upsert(
            Schedule(id="report", target="bench.jobs.record", cron="* * * * *", timezone="Europe/Berlin")
        )
        start_ms = redis_now_ms(conn) + WARMUP_FIRES * 1000
        ctx.log(f"backfill: baseline, the live schedule alone for {baseline_fires} fires, rep {rep + 1}")
        base_end = start_ms + baseline_fires * 1000
        wait_for(lambda: redis_now_ms(conn) > base_end + 1500, baseline_fires + 30, 0.5, "the baseline fires")
        baseline = live_lags(conn, start_ms, base_end)

        to_ms = redis_now_ms(conn) // MINUTE_MS * MINUTE_MS
        began = redis_now_ms(conn)
        client.backfill("report", to_ms - FIRES * MINUTE_MS, to_ms)
        ctx.log(f"backfill: {FIRES} fires beside the live schedule")

        def finished() -> bool:
            status = client.backfill_status("report")
            return status is not None and status.state is not BackfillState.ACTIVE

        wait_for(finished, 300, 0.2, "the backfill to finish")
        ended = redis_now_ms(conn)
        during = live_lags(conn, began, ended)
        counts = {str(text(k)): int(v) for k, v in conn.hgetall("bench:runs").items()}
        ran = [n for key, n in counts.items() if key.endswith(":backfill")]
    res.metric("live lag p50 during backfill", "ms", digits=2).values.append(percentile(during, 50))
    res.metric("live lag p99 during backfill", "ms", target=Target("<=", 50, "≤ 50"), digits=2).values.append(
        percentile(during, 99)
    )
    res.metric("live lag p99 alone (baseline)", "ms", digits=2).values.append(percentile(baseline, 99))
    res.metric(f"backfill of {FIRES} fires, wall time", "s", digits=1).values.append((ended - began) / 1000)
    res.metric(
        "backfilled fires run exactly once", "fires", target=Target(">=", FIRES, f"= {FIRES}"), digits=0
    ).values.append(sum(1 for n in ran if n == 1) if len(ran) == FIRES else 0)
    res.notes.append(
        f"rep {rep + 1}: {len(during)} live fires during the backfill, {len(baseline)} alone; "
        f"{len(ran)} backfilled keys, runs per key {sorted(set(ran))}."
    )


def run(ctx: Context) -> Result:
    res = Result(NAME, TITLE, __doc__ or "")
    for rep in range(ctx.reps):
        once(ctx, res, rep)
    return res
