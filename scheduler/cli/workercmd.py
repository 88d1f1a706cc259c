"""``rqbeat worker``: an RQ worker with rqbeat's atomic ack, started with the options
an RQ user types (``--path``, ``--burst``, ``--max-jobs``, ``--name``,
``--with-scheduler``) and a ``--mode``: fork (RQ's Worker), simple (RQ's
SimpleWorker) or pool (RQ's WorkerPool). :mod:`workers.modes` says what each costs."""

from __future__ import annotations

import logging

import click

from scheduler.cli.common import Context, add_import_paths, pass_context, path_option
from scheduler.cli.ops import LEVELS, log_format_option, setup_logging
from scheduler.errors import ConfigError
from scheduler.outage import wait_until_reachable
from workers import modes

log = logging.getLogger(__name__)


@click.command()
@click.argument("queues", nargs=-1)
@path_option("WORKER")
@click.option(
    "--mode",
    default=modes.Mode.FORK.value,
    type=click.Choice([m.value for m in modes.Mode]),
    envvar="RQBEAT_WORKER_MODE",
    show_envvar=True,
    show_default=True,
    help="fork: a process forked per job (RQ's Worker); simple: jobs run in the worker's "
    "process (RQ's SimpleWorker, cheaper, no isolation); pool: --processes forking "
    "workers under one supervisor (RQ's WorkerPool).",
)
@click.option(
    "--processes",
    default=2,
    type=click.IntRange(1, 256),
    show_default=True,
    help="With --mode pool: how many worker processes.",
)
@click.option("--burst", "-b", is_flag=True, help="Exit when the queues are empty.")
@click.option(
    "--max-jobs",
    default=None,
    type=click.IntRange(1),
    help="Exit after this many jobs (pool: each process, and the pool starts a new one).",
)
@click.option("--name", "-n", default=None, help="Worker name (default: RQ's; not with --mode pool).")
@click.option(
    "--with-scheduler",
    is_flag=True,
    help="Also run RQ's own scheduler, which moves jobs enqueued with enqueue_at/enqueue_in "
    "onto their queues when due. rqbeat does not need it (rqbeat run dispatches schedules).",
)
@click.option(
    "--job-monitoring-interval",
    default=5,
    type=click.IntRange(1, 3600),
    help="Seconds between heartbeats.",
)
@click.option(
    "--heartbeat-grace",
    default=10,
    type=click.IntRange(1, 3600),
    help="Seconds of silence past the interval before a run counts as abandoned.",
)
@click.option("--log-level", default="info", type=LEVELS, help="Logging threshold.")
@log_format_option("WORKER")
@pass_context
def worker(
    ctx: Context,
    queues: tuple[str, ...],
    paths: tuple[str, ...],
    mode: str,
    processes: int,
    burst: bool,
    max_jobs: int | None,
    name: str | None,
    with_scheduler: bool,
    job_monitoring_interval: int,
    heartbeat_grace: int,
    log_level: str,
    log_format: str,
) -> None:
    """Run an RQ worker that acknowledges rqbeat runs atomically (JSON serializer).

    Listens on QUEUES (default: "default") and imports jobs from --path (default: the
    current directory), like `rq worker -w workers.Worker -S rq.serializers.JSONSerializer
    QUEUES`.

    \b
    Examples:
      cd myapp && rqbeat worker default             # jobs in ./myapp/... import
      rqbeat worker reports -P /srv/app --mode simple
      rqbeat worker default --mode pool --processes 4
      rqbeat worker default --burst                 # run what is queued, then exit
    """
    chosen = modes.Mode(mode)
    if chosen is modes.Mode.POOL and name is not None:
        raise ConfigError("--name", name, "pool workers are named by RQ's WorkerPool; drop --name")
    add_import_paths(paths)
    setup_logging(log_level, log_format.lower())
    settings = modes.WorkerSettings(
        namespace=ctx.namespace,
        job_monitoring_interval_s=job_monitoring_interval,
        heartbeat_grace_s=heartbeat_grace,
        max_jobs=max_jobs,
        with_scheduler=with_scheduler,
        logging_level=log_level.upper(),
    )
    names = list(queues or ["default"])
    log.info("mode=%s queues=%s path=%s redis=%s", chosen, ",".join(names), paths, ctx.redis.describe())
    # RQ's worker exits when Redis is down as it starts: wait for it first (tenacity
    # retrying PING, which writes nothing, so retrying is safe; recovery once running is
    # RQ's and workers.AckingWorker's).
    wait_until_reachable(ctx.conn, where=ctx.redis.describe())
    if chosen is modes.Mode.POOL:
        modes.run_pool(names, ctx.conn, settings, processes=processes, burst=burst)
        return
    modes.work(modes.build(chosen, names, ctx.conn, settings, name), settings, burst=burst)


COMMANDS = [worker]
