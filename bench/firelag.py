"""Scenario 2, fire lag: how late a job lands in its queue relative to its nominal time.

Landing time = when Redis announced the push onto ``rq:queue:default``: the server runs
with ``notify-keyspace-events Kl`` and a subscriber thread in the benchmark stamps each
``rpush``/``lpush`` keyspace notification with the wall clock as it arrives
(bench.landing; the same clock the local Redis's ``TIME`` reads). lag = landing - the
nominal fire time (the nearest fire: a job that landed early shows a negative lag).

* **single**: one schedule firing every second, one scheduler, a worker consuming,
  60 fires per scheduler in 3 rounds of 20 (10 in one round with --quick), the first 2
  of each round dropped as warm-up. The schedulers take turns (rqbeat, the baseline, RQ
  cron; again), each round on its own private Redis, so the machine's load falls alike:
  - *rqbeat*: an ``every = "1s"`` schedule (``Client.upsert``), one ``rqbeat run``
    replica, one ``rqbeat worker`` running ``bench.jobs.noop`` (stamp after ack needs a
    worker). Nominal fire = the ``fire_at`` of the schedule's ``dispatched`` history
    entries. Also reported: the leader's send time (history ``at``, its estimate of
    Redis time when it sent the write) minus the fire, i.e. how late the leader woke.
  - *rqbeat (baseline REF)*: the same, the replica run from ``git archive REF`` (only
    with ``--baseline REF``): the before of a before/after.
  - *RQ cron*: RQ's own scheduler, ``rq cron cron_config.py`` (``rq.cron``) with
    ``cron.register(bench.jobs.noop, "default", cron="* * * * * *")`` (croniter reads a
    sixth field as seconds: every whole second), one stock ``rq worker`` consuming.
    Nominal fire = the whole second.
  The ratio is rqbeat's p50 (and p99) over RQ cron's, same run.
* **1,000/s**: 1,000 ``every = "1s"`` schedules, one replica, for 10 s per repetition
  (5 s with --quick; the first 3 s dropped). *aligned*: all 1,000 fire at each whole
  second, a 1,000-job burst every second. *spread*: ``jitter = "999ms"`` spreads their
  due times uniformly over the second; lag is measured from the due time (fire +
  jitter). RQ's forking workers cannot run 1,000 jobs/s on 2 cores, so these runs are
  acknowledged by a synthetic acker thread in the benchmark that pops the jobs and
  runs the same ack as ``workers.Worker`` (``runs.read_in_flight`` +
  ``runs.prepare_ack`` + the ACK script), without executing them. Landing here is the
  ID of each schedule's ``dispatched`` history entry (Redis's clock when the dispatch
  transaction ran; 1 ms resolution, taken as ID + 0.5 ms), which names the schedule.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from redis import Redis

from bench.core import Context, Result, Target, percentile
from bench.env import REPO, history, stack, wait_for, wait_role
from bench.landing import KEYSPACE_EVENTS, LandingWatch, lags_ms
from scheduler import Client, Schedule, policy, scripts
from scheduler.clock import parse_iso_ms, redis_now_ms
from scheduler.engine import runs
from scheduler.keys import Keys
from scheduler.records import text

NAME = "firelag"
TITLE = "2. Fire lag"
WARMUP_FIRES = 2
WARMUP_S = 3.0
RQ_CRON_CONFIG = """\
from rq import cron

from bench.jobs import noop

cron.register(noop, "default", cron="* * * * * *")
"""
BELOW_ONE = Target("<", 1, "< 1")
SINGLE_TARGETS = {"p50": Target("<=", 1, "≤ 1"), "p99": Target("<=", 3, "≤ 3")}


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


#: The single-schedule runs alternate in rounds (rqbeat, the baseline, RQ cron, again),
#: so that a change in the machine's load during the run falls on all of them alike.
ROUNDS, QUICK_ROUNDS = 3, 1


def _fires(ctx: Context) -> int:
    """Fires per scheduler per round, warm-up included."""
    return (10 if ctx.quick else 60 // ROUNDS) + WARMUP_FIRES


def single_rqbeat(ctx: Context, tag: str, tree: Path = REPO) -> tuple[list[float], list[float]]:
    """Landing lags and leader-send lags (ms) of one every-1s schedule, measured fires."""
    need = _fires(ctx)
    with ctx.redis(tag, extra=KEYSPACE_EVENTS) as server, stack(ctx.workdir / tag, server) as st:
        conn = server.client()
        watch = LandingWatch(server.port)
        watch.start()
        st.worker("w1")
        Client(conn).upsert(Schedule(id="lag-1", target="bench.jobs.noop", every_ms=1000))
        st.replica("r1", tree=tree)
        wait_for(lambda: len(watch.landed) >= need, need * 2 + 30, 0.5, f"{need} fires ({tag})")
        watch.close()
        rows = dispatched(conn, "lag-1")
    fires = [parse_iso_ms(row["fire_at"]) for row in rows]
    sent = [float(parse_iso_ms(row["at"]) - parse_iso_ms(row["fire_at"])) for row in rows[WARMUP_FIRES:need]]
    return lags_ms(watch.landed[WARMUP_FIRES:need], fires), sent


def single_rq_cron(ctx: Context, tag: str) -> list[float]:
    """Landing lags (ms) of RQ's cron firing ``* * * * * *``, a stock worker consuming."""
    need = _fires(ctx)
    with ctx.redis(tag, extra=KEYSPACE_EVENTS) as server, stack(ctx.workdir / tag, server) as st:
        config = ctx.workdir / tag / "cron_config.py"
        config.write_text(RQ_CRON_CONFIG)
        watch = LandingWatch(server.port)
        watch.start()
        st.plain_rq_worker("w1", serializer="pickle")
        st.rq_cron("rq-cron", config)
        wait_for(lambda: len(watch.landed) >= need, need * 2 + 30, 0.5, f"{need} fires ({tag})")
        watch.close()
    landed = watch.landed[WARMUP_FIRES:need]
    return lags_ms(landed, [round(at) * 1000 for at in landed])  # nominal: the nearest whole second


def baseline_tree(ctx: Context) -> Path:
    """``git archive`` of ``ctx.baseline`` under the work directory (made once)."""
    tree = ctx.workdir / "baseline-tree"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", ctx.baseline], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def single(ctx: Context, res: Result) -> None:
    """rqbeat, the baseline (if any) and RQ's cron, each on its own Redis, in rounds."""
    rounds = QUICK_ROUNDS if ctx.quick else ROUNDS
    ctx.log(f"fire lag, one every-1s schedule, {rounds} x {_fires(ctx) - WARMUP_FIRES} fires per scheduler")
    land: list[float] = []
    sent: list[float] = []
    base_land: list[float] = []
    base_sent: list[float] = []
    cron: list[float] = []
    for r in range(rounds):
        more_land, more_sent = single_rqbeat(ctx, f"firelag-single-{r}")
        land += more_land
        sent += more_sent
        if ctx.baseline:
            more_land, more_sent = single_rqbeat(ctx, f"firelag-single-baseline-{r}", baseline_tree(ctx))
            base_land += more_land
            base_sent += more_sent
        cron += single_rq_cron(ctx, f"firelag-single-rqcron-{r}")
    _record(res, "single: rqbeat landing", land, SINGLE_TARGETS)
    res.metric("single: rqbeat leader sent (history `at`) p50", "ms", digits=2).values.append(
        percentile(sent, 50)
    )
    if ctx.baseline:
        _record(res, f"single: rqbeat at {ctx.baseline} (before) landing", base_land, {})
        res.metric(f"single: rqbeat at {ctx.baseline} leader sent p50", "ms", digits=2).values.append(
            percentile(base_sent, 50)
        )
    _record(res, "single: RQ cron landing", cron, {})
    for name, q in (("p50", 50.0), ("p99", 99.0)):
        ratio = res.metric(f"single: rqbeat / RQ cron, lag {name}", "ratio", target=BELOW_ONE, digits=2)
        ratio.values.append(percentile(land, q) / percentile(cron, q))
    early = sum(1 for lag in [*land, *base_land, *cron] if lag < 0)
    res.notes.append(
        f"single: {len(land)} rqbeat fires and {len(cron)} RQ cron fires measured"
        + (f", {len(base_land)} at {ctx.baseline}" if ctx.baseline else "")
        + f", in {rounds} alternating round(s); {early} landed before their time."
    )


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


def thousand(ctx: Context, res: Result, variant: str, rep: int, baseline: bool = False) -> None:
    """1,000 every-1s schedules (``variant``: aligned or spread); ``baseline``: the
    replica runs from ``ctx.baseline``'s tree, the metrics are named after it."""
    seconds = 5 if ctx.quick else 10
    jitter = 999 if variant == "spread" else 0
    schedules = [
        Schedule(id=f"k-{i:04d}", target="bench.jobs.noop", every_ms=1000, jitter_ms=jitter)
        for i in range(1000)
    ]
    tag = f"firelag-{variant}-{rep}" + ("-baseline" if baseline else "")
    who = f" (at {ctx.baseline}, before)" if baseline else ""
    with ctx.redis(tag) as server, stack(ctx.workdir / tag, server) as st:
        conn = server.client()
        Client(conn).upsert_many(schedules)
        acker = Acker(server.url)
        acker.start()
        st.replica("r1", tree=baseline_tree(ctx) if baseline else REPO)
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
    _record(res, f"1,000/s {variant}{who}:", lags, {} if baseline else {"p99": Target("<=", 50, "≤ 50")})
    res.metric(f"1,000/s {variant}{who}: fires measured per second", "fires/s", digits=0).values.append(
        len(lags) / max(1.0, (end_ms - 1000 - start_ms) / 1000)
    )
    res.notes.append(
        f"1,000/s {variant}{who} rep {rep + 1}: {len(lags)} fires measured (~{expected} nominal), "
        f"{acker.acked} acked by the synthetic acker, {missed} `missed` history entries."
    )


def run(ctx: Context) -> Result:
    res = Result(NAME, TITLE, __doc__ or "")
    single(ctx, res)
    for variant in ("aligned", "spread"):
        for rep in range(ctx.reps):
            thousand(ctx, res, variant, rep)
            if ctx.baseline:
                thousand(ctx, res, variant, rep, baseline=True)
    return res
