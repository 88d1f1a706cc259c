"""Commands that run things and report on them: run, status, check (worker:
:mod:`scheduler.cli.workercmd`)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import click
import redis.exceptions

from scheduler import clockskew, dataloss
from scheduler.cli.common import Context, allow_option, echo_json, json_option, parse_allow, pass_context
from scheduler.cli.status_view import status_lines
from scheduler.durations import parse_duration_ms
from scheduler.engine.alerts import AlertConfig
from scheduler.engine.service import Service, ServiceConfig
from scheduler.errors import ConfigError, InvalidSchedule
from scheduler.eviction import eviction_warning, read_policy
from scheduler.health import FindingKind, Health, read_health
from scheduler.keys import Keys
from scheduler.logs import formatter
from scheduler.memory import memory_note, memory_problem, read_memory
from scheduler.model import WEBHOOK_PATTERN
from scheduler.ops.repair import Finding
from scheduler.ops.repair_io import RepairOutcome, examine, run_repair
from scheduler.ops.status import node_problems, read_status
from scheduler.outage import wait_until_reachable
from scheduler.rqkeys import RqIdentity

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(level: str, log_format: str = "text") -> None:
    """The CLI is the only place that configures logging handlers: one stderr handler
    on the root logger (RQ's worker then adds none of its own), text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])


LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


def _shared_env(command: str, option: str) -> list[str]:
    """The command's own variable first, then one shared by `run` and `worker`
    (RQBEAT_LOG_FORMAT set once for a whole deployment)."""
    return [f"RQBEAT_{command}_{option}", f"RQBEAT_{option}"]


def log_format_option(command: str) -> Callable[[F], F]:
    return click.option(
        "--log-format",
        default="text",
        type=click.Choice(["text", "json"], case_sensitive=False),
        envvar=_shared_env(command, "LOG_FORMAT"),
        show_envvar=True,
        help="text: one readable line per event; json: one JSON object per line "
        "(ts, level, logger, msg, schedule, fire, job_id, attempt, epoch, ...).",
    )


@click.command()
@click.option(
    "--lease",
    default="15s",
    help="Leader lease TTL: a stopped or cut-off leader is replaced within it "
    "(a killed one at once, its connection being gone).",
)
@click.option("--node", default="", help="This replica's name (default: host-pid).")
@click.option(
    "--batch-size",
    default=1000,
    type=click.IntRange(1, 100_000),
    help="Schedules per dispatch transaction.",
)
@click.option("--log-level", default="info", type=LEVELS, help="Logging threshold.")
@log_format_option("RUN")
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(1, 65535),
    envvar=_shared_env("RUN", "METRICS_PORT"),
    show_envvar=True,
    help="Serve Prometheus metrics on http://HOST:PORT/metrics (default: off).",
)
@click.option(
    "--metrics-host",
    default="0.0.0.0",  # a scrape target: reachable from the Prometheus server
    envvar=_shared_env("RUN", "METRICS_HOST"),
    show_envvar=True,
    help="Address the metrics endpoint listens on.",
)
@click.option(
    "--webhook-url",
    default=None,
    help="POST every schedule's alerts (gave up, broken, paused, recovered) here, as signed JSON.",
)
@click.option(
    "--webhook-secret-env",
    default=None,
    metavar="NAME",
    help="The environment variable holding the secret that signs the alerts (never the secret itself).",
)
@click.option(
    "--alert-interval",
    default="60s",
    help="Alert events (gave up, broken, ...) wake the leader at once through pub/sub; "
    "it also takes them at least this often.",
)
@click.option(
    "--health-alert-interval",
    default="60s",
    help="How often the leader looks at the health findings (stale, queued too long, ...) to alert.",
)
@allow_option
@pass_context
def run(
    ctx: Context,
    lease: str,
    node: str,
    batch_size: int,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
    webhook_url: str | None,
    webhook_secret_env: str | None,
    alert_interval: str,
    health_alert_interval: str,
    allow: str | None,
) -> None:
    """Run a scheduler replica. Start several: one leads, the others stand by.

    \b
    Example:
      rqbeat --redis-url redis://redis:6379/0 run --lease 15s
      rqbeat run --metrics-port 9464 --log-format json
      rqbeat run --allow myapp.jobs,reports   # other targets are marked broken
      rqbeat run --webhook-url https://hooks.example/rqbeat --webhook-secret-env RQBEAT_SECRET
    """
    try:
        lease_ms = parse_duration_ms("lease", lease)
    except InvalidSchedule as exc:
        raise ConfigError("--lease", lease, exc.reason) from None
    if lease_ms < 1000:
        raise ConfigError("--lease", lease, "must be at least 1s")
    allowed = parse_allow(allow)
    alerts = replace(
        alert_config(webhook_url, webhook_secret_env),
        poll_s=_interval_s("--alert-interval", alert_interval),
        health_every_s=_interval_s("--health-alert-interval", health_alert_interval),
    )
    setup_logging(log_level, log_format.lower())
    config = ServiceConfig(
        redis=ctx.redis,
        namespace=ctx.namespace,
        node=node,
        lease_ms=lease_ms,
        batch_size=batch_size,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        allow=allowed,
        alerts=alerts,
    )
    service = Service(config)
    logging.getLogger(__name__).info(
        "redis=%s allow=%s", ctx.redis.describe(), allowed if allowed is not None else "any"
    )
    # Started beside Redis (compose, systemd), a replica may come up first: wait for it
    # (tenacity retrying PING, which writes nothing, so retrying is safe), then check its
    # eviction policy against it. Later outages are the service loop's to ride out.
    wait_until_reachable(service.conn, where=ctx.redis.describe())
    signal.signal(signal.SIGTERM, service.on_signal)
    signal.signal(signal.SIGINT, service.on_signal)
    service.run()


def _interval_s(option: str, text: str) -> float:
    try:
        ms = parse_duration_ms(option.lstrip("-"), text)
    except InvalidSchedule as exc:
        raise ConfigError(option, text, exc.reason) from None
    if ms < 100:
        raise ConfigError(option, text, "must be at least 100ms")
    return ms / 1000


def alert_config(url: str | None, secret_env: str | None) -> AlertConfig:
    """The namespace's webhook from the flags; the secret is read from the variable
    named, so it never shows in a process list or a shell history."""
    if url is not None and not WEBHOOK_PATTERN.fullmatch(url):
        raise ConfigError("--webhook-url", url, "must be an http:// or https:// URL")
    secret = None
    if secret_env is not None:
        value = os.environ.get(secret_env)
        if not value:
            raise ConfigError("--webhook-secret-env", secret_env, "names no set environment variable")
        secret = value.encode()
    elif url is not None:
        logging.getLogger(__name__).warning("--webhook-url without --webhook-secret-env: alerts are unsigned")
    return AlertConfig(url=url, secret=secret)


@click.command()
@json_option
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Leader (epoch, lease left), replicas (heartbeat age), schedules by state,
    the oldest overdue fire, and RQ's queues with their workers.

    \b
    Examples:
      rqbeat status
      rqbeat status --json
    """
    report = read_status(ctx.conn, ctx.namespace)
    health = read_health(ctx.conn, Keys(ctx.namespace))
    if as_json:
        echo_json({**report.to_json(), "health": health.to_json()})
        return
    click.echo("\n".join(status_lines(report, health)))


@click.command()
@click.option("--max-lag", default="60s", help="Unhealthy when a due fire is older than this.")
@click.option("--node", default="", help="Also require this replica's heartbeat (its `run --node`).")
@click.option(
    "--node-max-age", default="90s", help="With --node: unhealthy when its heartbeat (every 30 s) is older."
)
@click.option(
    "--max-clock-offset",
    default=f"{clockskew.TOLERANCE_MS // 1000}s",
    help="Unhealthy when an rqbeat worker's clock is further off Redis time.",
)
@click.option("--repair", is_flag=True, help="Fix what the scan of the stored state finds (asks first).")
@click.option("--yes", is_flag=True, help="With --repair: do not ask (scripts, cron jobs).")
@click.option(
    "--health-only",
    is_flag=True,
    help="Skip the scan of every schedule and the worker clocks: a cheap probe of the scheduler.",
)
@click.option("--warn", is_flag=True, help="Print the findings but exit 0 (report, do not fail).")
@json_option
@pass_context
def check(
    ctx: Context,
    max_lag: str,
    node: str,
    node_max_age: str,
    max_clock_offset: str,
    repair: bool,
    yes: bool,
    health_only: bool,
    warn: bool,
    as_json: bool,
) -> None:
    """Health and consistency check: exit 0 when a leader holds the lease, no fire
    is overdue by more than --max-lag, nothing stalls (no run queued too long, no
    queue without a live worker or with one that cannot read rqbeat's jobs, no
    schedule broken or without a recent success: the README's "Health"), no rqbeat
    worker's clock is off Redis time by more than --max-clock-offset and the stored
    state is consistent; exit 1 with one line per finding otherwise (--warn: the same
    lines, exit 0). With --node, also the named replica must have
    reported itself within --node-max-age: a per-container health check for `rqbeat
    run`. Warns (stderr, exit code unchanged) when Redis's maxmemory-policy can evict
    rqbeat's data, or when Redis refused writes for lack of memory earlier; unhealthy
    while Redis uses 95% or more of its maxmemory (writes are refused with OOM when it
    is full). --repair fixes the stored state, each fix one atomic step that
    never drops a valid schedule (see the README, "Repairing state").

    \b
    Examples:
      rqbeat check --max-lag 2m || alert "rqbeat is not scheduling"
      rqbeat check --health-only      # the cheap probe (no scan): Docker's health check
      rqbeat check --warn             # the findings, exit 0
      rqbeat check --node replica-1   # in the container running `run --node replica-1`
      rqbeat check --json             # what the scan of the stored state found
      rqbeat check --repair --yes     # fix it without asking
    """
    limit_ms = parse_duration_ms("max-lag", max_lag)
    node_age_ms = parse_duration_ms("node-max-age", node_max_age)
    clock_ms = parse_duration_ms("max-clock-offset", max_clock_offset)
    if repair and health_only:
        raise ConfigError("--repair", True, "needs the scan; drop --health-only")
    policy_warning = eviction_warning(read_policy(ctx.conn) or "noeviction")
    if policy_warning:
        click.echo(f"warning: {policy_warning}", err=True)
    rq_json = _warn_rq(ctx)
    keys = Keys(ctx.namespace)
    found = [] if health_only else examine(ctx.conn, keys).findings
    outcome = None
    if repair and found:
        if not yes:
            click.confirm(f"Repair {len(found)} problem(s) in {ctx.namespace}?", abort=True, err=True)
        outcome = run_repair(ctx.conn, keys)
    if repair:
        _clear_data_lost(ctx, keys, yes)
    remaining = outcome.remaining if outcome is not None else found
    # a worker's clock is no reason to restart a replica: not part of the container probe
    clock_limit = None if health_only else clock_ms
    problems, summary, health = _health(ctx, limit_ms, node, node_age_ms, clock_limit)
    problems.extend(_memory_problems(ctx))
    if remaining:
        problems.append(f"{len(remaining)} problem(s) in the stored state")
    if as_json:
        echo_json({**_check_json(found, outcome, problems, health), **rq_json})
        if problems and not warn:
            raise click.exceptions.Exit(1)
        return
    _echo_findings(found, outcome)
    _conclude(problems, summary, health, warn=warn)


def _conclude(problems: list[str], summary: str, health: Health | None, *, warn: bool) -> None:
    """One line per health finding, then the verdict: exit 1 naming the problems, or
    (``--warn``, or nothing found) exit 0."""
    for line in health.lines() if health is not None else []:
        click.echo(line)
    if problems and not warn:
        raise click.ClickException("; ".join(problems))
    click.echo(
        f"warning: {'; '.join(problems)}" if problems else f"{summary}; {RqIdentity.current().label()}"
    )


def _warn_rq(ctx: Context) -> dict[str, Any]:
    """Where replicas and workers disagree on RQ (stderr: the exit code stays the
    health verdict); which RQ this process runs and those warnings for ``--json``."""
    try:
        report = read_status(ctx.conn, ctx.namespace, detail=False)
    except redis.exceptions.ResponseError:
        return {}  # WRONGTYPE: _health reports it
    for warning in report.rq_warnings:
        click.echo(f"warning: {warning}", err=True)
    return {"rq": report.to_json()["rq"], "rq_warnings": report.rq_warnings}


def _health(
    ctx: Context, limit_ms: int, node: str, node_age_ms: int, clock_ms: int | None
) -> tuple[list[str], str, Health | None]:
    """The health problems (findings, overdue fires, --node, worker clocks), the
    one-line summary, and the findings (each printed on its own line)."""
    try:
        report = read_status(ctx.conn, ctx.namespace, detail=False)
        health = read_health(ctx.conn, Keys(ctx.namespace))
    except redis.exceptions.ResponseError as exc:  # WRONGTYPE: a set key edited by hand
        return [f"cannot read the status: {str(exc).splitlines()[0]}"], "", None
    now = report.now_ms
    problems = [] if report.data_lost is None else [report.data_lost.line()]
    problems += [_problem(kind, n) for kind, n in health.counts.items() if n]
    if report.oldest_overdue_ms is not None and now - report.oldest_overdue_ms > limit_ms:
        problems.append(
            f"schedule {report.oldest_overdue_id} is overdue by {(now - report.oldest_overdue_ms) // 1000}s"
        )
    if node:
        problems.extend(node_problems(report, node, node_age_ms))
    if clock_ms is not None:
        problems.extend(report.clock_problems(clock_ms))
    seen = f", replica {node} reporting" if node else ""
    return problems, f"ok: leader {report.leader_node}, {report.total} schedules{seen}", health


def _memory_problems(ctx: Context) -> list[str]:
    """Redis (nearly) full is a problem; OOM refusals seen earlier are a warning."""
    memory = read_memory(ctx.conn)
    if memory is None:
        return []
    note = memory_note(memory)
    if note:
        click.echo(f"warning: {note}", err=True)
    problem = memory_problem(memory)
    return [problem] if problem else []


def _clear_data_lost(ctx: Context, keys: Keys, yes: bool) -> None:
    """--repair: a person acknowledges a recorded loss (after re-applying the files)."""
    marker = dataloss.decode_marker(ctx.conn.hgetall(keys.data_lost))
    if marker is None:
        return
    click.echo(marker.line())
    if not yes:
        click.confirm("Schedule files re-applied? Clear the data_lost marker", abort=True, err=True)
    dataloss.clear(ctx.conn, keys)
    click.echo("cleared the data_lost marker")


def _problem(kind: FindingKind, count: int) -> str:
    return "no leader holds the lease" if kind is FindingKind.NO_LEADER else f"{count} {kind}"


def _check_json(
    found: list[Finding], outcome: RepairOutcome | None, problems: list[str], health: Health | None
) -> dict[str, Any]:
    remaining = outcome.remaining if outcome is not None else found
    return {
        "ok": not problems,
        "problems": problems,
        "health": health.to_json() if health is not None else None,
        "findings": [f.to_json() for f in found],
        "repaired": None if outcome is None else outcome.applied,
        "remaining": [f.to_json() for f in remaining],
    }


def _echo_findings(found: list[Finding], outcome: RepairOutcome | None) -> None:
    for finding in found:
        click.echo(finding.line())
    if outcome is not None:
        for finding in outcome.remaining:
            click.echo(f"still: {finding.line()}")
        click.echo(f"repaired: {outcome.applied} step(s); {len(outcome.remaining)} problem(s) remain")
    elif found:
        click.echo(f"{len(found)} problem(s) in the stored state (dry run; fix with: rqbeat check --repair)")


COMMANDS = [run, status, check]
