"""``rqbeat import``: another scheduler's schedules as an rqbeat TOML file."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import click
from redis import Redis

from scheduler.cli.common import Context, pass_context
from scheduler.errors import ConfigError
from scheduler.ops.importing import redbeat as redbeat_reader
from scheduler.ops.importing import rqcron, rqscheduler, toml
from scheduler.ops.importing.found import Imported


class Source(StrEnum):
    RQ_CRON = "rq-cron"
    RQ_SCHEDULER = "rq-scheduler"
    REDBEAT = "redbeat"


@click.command(name="import")
@click.argument("source", type=click.Choice([s.value for s in Source]))
@click.argument("config", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the TOML here (default: stdout).",
)
@click.option("--source-url", help="Redis of the other scheduler (default: --redis-url).")
@click.option("--tz", "timezone", help="IANA zone the source reads its cron in (default: the source's own).")
@click.option("--prefix", default=redbeat_reader.DEFAULT_PREFIX, help="redbeat: its key prefix.")
@click.option("--serializer", help="rq-scheduler: RQ serializer of its jobs (default: RQ's, pickle).")
@pass_context
def import_schedules(
    ctx: Context,
    source: str,
    config: Path | None,
    output: Path | None,
    source_url: str | None,
    timezone: str | None,
    prefix: str,
    serializer: str | None,
) -> None:
    """Read SOURCE's schedules and write them as an rqbeat TOML file for `rqbeat apply`.
    The source is only read, never changed; what cannot be carried over is listed on
    stderr and in the file's header.

    \b
    SOURCE is one of:
      rq-cron       RQ's cron: CONFIG is the module of cron.register(...) calls
      rq-scheduler  rq-scheduler's jobs in Redis
      redbeat       celery-redbeat's entries in Redis

    \b
    Example:
      rqbeat import rq-cron myapp/cron_config.py -o schedules.toml
      rqbeat import rq-scheduler --source-url redis://localhost:6379/0 -o schedules.toml
      rqbeat import redbeat --tz Europe/Berlin -o schedules.toml && rqbeat apply schedules.toml --dry-run
    """
    found = _read(ctx, Source(source), config, source_url, timezone, prefix, serializer)
    document = toml.dumps(found)
    if output is None:
        click.echo(document, nl=False)
    else:
        output.write_text(document, encoding="utf-8")
    for note in found.notes:
        click.echo(f"note: {note}", err=True)
    where = f" to {output}" if output else ""
    click.echo(
        f"imported {len(found.schedules)} schedules from {source}{where}; {len(found.notes)} notes", err=True
    )


def _read(
    ctx: Context,
    source: Source,
    config: Path | None,
    source_url: str | None,
    timezone: str | None,
    prefix: str,
    serializer: str | None,
) -> Imported:
    if source is Source.RQ_CRON:
        if config is None:
            raise ConfigError("CONFIG", None, "rq-cron needs the path of the cron config module")
        sys.path.insert(0, str(config.resolve().parent))  # as `rq cron` run from that directory
        return rqcron.read(config, timezone=timezone)
    if config is not None:
        raise ConfigError("CONFIG", str(config), f"{source} reads Redis, not a file: use --source-url")
    conn = Redis.from_url(source_url) if source_url else ctx.conn
    if source is Source.RQ_SCHEDULER:
        return rqscheduler.read(conn, timezone=timezone, serializer=serializer)
    return redbeat_reader.read(conn, prefix=prefix, timezone=timezone or "UTC")


COMMANDS = [import_schedules]
