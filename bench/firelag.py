"""Scenario 2, fire lag: how late a job lands in its queue relative to its nominal time.

Landing time = the ID of the schedule's ``dispatched`` history entry: Redis's own clock
when the dispatch transaction (the one that also enqueues the job) executed. Entry IDs
have 1 ms resolution (truncated), so landing is taken as ID + 0.5 ms (±0.5 ms). The
single-schedule case also reports the RQ job's ``enqueued_at`` (µs, the leader's
estimate of Redis time when it sends the write: a dispatch decided ahead of its due time
is stamped at its send, so this shows how late the leader woke, not the round trip).

* **single**: one ``every = "1s"`` schedule (``Client.upsert``), one replica, one
  ``rqbeat worker`` running ``bench.jobs.noop`` (stamp after ack needs a worker);
  60 fires (10 with --quick), the first 2 dropped as warm-up. lag = landing - fire.
* **1,000/s**: 1,000 ``every = "1s"`` schedules, one replica, for 10 s per repetition
  (5 s with --quick; the first 3 s dropped). *aligned*: all 1,000 fire at each whole
  second, a 1,000-job burst every second. *spread*: ``jitter = "999ms"`` spreads their
  due times uniformly over the second; lag is measured from the due time (fire +
  jitter). RQ's forking workers cannot run 1,000 jobs/s on 2 cores, so these runs are
  acknowledged by a synthetic acker thread in the benchmark that pops the jobs and
  runs the same ack as ``workers.Worker`` (``runs.read_in_flight`` +
  ``runs.prepare_ack`` + the ACK script), without executing them.
"""

from __future__ import annotations

import threading
import time

from redis import Redis
from rq.utils import utcparse

from bench.core import Context, Result, Target, percentile
from bench.env import history, stack, wait_for, wait_role
from scheduler import Client, Schedule, policy, scripts
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.engine import runs
from scheduler.keys import Keys
from scheduler.records import text

NAME = "firelag"
TITLE = "2. Fire lag"
WARMUP_FIRES = 2
WARMUP_S = 3.0


def dispatched(conn: Redis, schedule_id: str) -> list[dict[str, str]]:
    """The schedule's ``dispatched`` history entries, with ``land_ms`` from the entry ID."""
    return [
        {**entry.fields, "land_ms": str(entry.at_ms + 0.5)}
        for entry in history(conn, schedule_id)
        if entry.event == "dispatched"
    ]


def _record(res: Result, prefix: str, lags_ms: list[float], targets: dict[str, Target]) -> None:
    for name, q in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
        res.metric(f"{prefix} lag {name}", "ms", target=targets.get(name), digits=2).values.append(
            percentile(lags_ms, q)
        )


def single(ctx: Context, res: Result) -> None:
    fires = 10 if ctx.quick else 60
    with ctx.redis("firelag-single") as server, stack(ctx.workdir / "firelag-single", server) as st:
        conn = server.client()
        st.worker("w1")
        Client(conn).upsert(Schedule(id="lag-1", target="bench.jobs.noop", every_ms=1000))
        st.replica("r1")
        ctx.log(f"fire lag, one every-1s schedule, {fires} fires")
        need = fires + WARMUP_FIRES
        wait_for(lambda: len(dispatched(conn, "lag-1")) >= need, need * 2 + 30, 0.5, "the fires")
        rows = dispatched(conn, "lag-1")[WARMUP_FIRES:need]
        missed = sum(1 for entry in history(conn, "lag-1") if entry.event == "missed")
        land, enq, decide = [], [], []
        for row in rows:
            fire = parse_iso_ms(row["fire_at"])
            land.append(float(row["land_ms"]) - fire)
            decide.append(parse_iso_ms(row["at"]) - fire)
            enqueued = text(conn.hget(f"rq:job:{row['job_id']}", "enqueued_at"))
            if enqueued:
                enq.append(utcparse(enqueued).timestamp() * 1000 - fire)
    _record(
        res,
        "single: landing",
        land,
        {"p50": Target("<=", 1, "≤ 1"), "p99": Target("<=", 5, "≤ 5")},
    )
    _record(res, "single: enqueued_at", enq, {})
    res.metric("single: leader woke (history `at`) p50", "ms", digits=1).values.append(percentile(decide, 50))
    res.notes.append(f"single: {len(rows)} fires measured; missed (misfire) entries: {missed}.")


class Acker(threading.Thread):
    """Acknowledges rqbeat jobs as soon as they are queued, the way workers.Worker does,
    without running them (so the scheduler, not RQ's fork-per-job, is measured)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.conn = Redis.from_url(url)
        self.keys = Keys()
        self.scripts = scripts.Scripts(self.conn)
        self.stopping = threading.Event()
        self.acked = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            first = self.conn.blpop(["rq:queue:default"], timeout=0.2)
            if not first:
                continue
            more = self.conn.lpop("rq:queue:default", 999) or []
            self._ack([first[1], *more])

    def _ack(self, job_ids: list[bytes | str]) -> None:
        now = redis_now_ms(self.conn)
        pipe = self.conn.pipeline(transaction=False)
        for raw in job_ids:
            job_id = str(text(raw))
            run = runs.read_in_flight(self.conn, self.keys, job_id.rsplit("-", 2)[0])
            if run is not None and run.job_id == job_id:
                runs.prepare_ack(self.keys, run, now).add_to(pipe, self.scripts)
                self.acked += 1
        pipe.execute()


def thousand(ctx: Context, res: Result, variant: str, rep: int) -> None:
    seconds = 5 if ctx.quick else 10
    jitter = 999 if variant == "spread" else 0
    schedules = [
        Schedule(id=f"k-{i:04d}", target="bench.jobs.noop", every_ms=1000, jitter_ms=jitter)
        for i in range(1000)
    ]
    tag = f"firelag-{variant}-{rep}"
    with ctx.redis(tag) as server, stack(ctx.workdir / tag, server) as st:
        conn = server.client()
        Client(conn).upsert_many(schedules)
        acker = Acker(server.url)
        acker.start()
        st.replica("r1")
        wait_role(conn, "r1", "leader")
        start_ms = redis_now_ms(conn) + WARMUP_S * 1000
        ctx.log(f"fire lag, 1,000 every-1s schedules ({variant}) for {seconds}s, rep {rep + 1}")
        time.sleep(WARMUP_S + seconds)
        end_ms = redis_now_ms(conn)
        st.close()
        acker.stopping.set()
        acker.join(5)
        lags: list[float] = []
        for s in schedules:
            for row in dispatched(conn, s.id):
                fire = parse_iso_ms(row["fire_at"])
                due = policy.due_score_ms(s, fire)
                if start_ms <= due <= end_ms - 1000:
                    lags.append(float(row["land_ms"]) - due)
        missed = conn.eval(
            "local n = 0 for _, k in ipairs(redis.call('KEYS', 'rqbeat:history:*')) do "
            "for _, e in ipairs(redis.call('XRANGE', k, '-', '+')) do "
            "if e[2][2] == 'missed' then n = n + 1 end end end return n",
            0,
        )
    expected = 1000 * int((end_ms - 1000 - start_ms) / 1000)
    _record(res, f"1,000/s {variant}:", lags, {"p99": Target("<=", 50, "≤ 50")})
    res.metric(f"1,000/s {variant}: fires measured per second", "fires/s", digits=0).values.append(
        len(lags) / max(1.0, (end_ms - 1000 - start_ms) / 1000)
    )
    res.notes.append(
        f"1,000/s {variant} rep {rep + 1}: {len(lags)} fires measured (~{expected} nominal), "
        f"{acker.acked} acked by the synthetic acker, {missed} `missed` history entries."
    )


def run(ctx: Context) -> Result:
    res = Result(NAME, TITLE, __doc__ or "")
    single(ctx, res)
    for variant in ("aligned", "spread"):
        for rep in range(ctx.reps):
            thousand(ctx, res, variant, rep)
    return res
