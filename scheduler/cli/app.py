"""The click group, shared options and the translation of errors to exit codes."""

from __future__ import annotations

from typing import Any

import click
import redis.exceptions

from scheduler.cli import aclcmd, ops, schedules
from scheduler.cli.common import Context
from scheduler.cli.connopts import connection_options, redis_settings
from scheduler.connection import DEFAULT_REDIS_URL, mask_secrets
from scheduler.errors import RqbeatError, ScheduleNotFound
from scheduler.keys import DEFAULT_NAMESPACE


class BadInput(click.ClickException):
    """Invalid input: one line naming the field and the reason, exit code 2."""

    exit_code = 2


class RqbeatGroup(click.Group):
    """Maps rqbeat's errors to one-line messages and exit codes; no tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValueError as exc:  # InvalidSchedule, ConfigError: the input is at fault
            raise BadInput(str(exc)) from None
        except ScheduleNotFound as exc:
            raise click.ClickException(str(exc)) from None
        except RqbeatError as exc:
            raise click.ClickException(str(exc)) from None
        except redis.exceptions.AuthenticationError as exc:  # a ConnectionError subclass: first
            raise click.ClickException(f"Redis refused the credentials: {_first_line(ctx, exc)}") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            where = ctx.obj.redis.describe() if isinstance(ctx.obj, Context) else "?"
            raise click.ClickException(f"cannot reach Redis at {where}: {_first_line(ctx, exc)}") from None
        except redis.exceptions.ResponseError as exc:  # NOPERM (ACL), WRONGTYPE (key edited by hand)
            raise click.ClickException(f"Redis refused the command: {_first_line(ctx, exc)}") from None


def _first_line(ctx: click.Context, exc: BaseException) -> str:
    """The error's first line, with any password it might quote masked."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    secrets = ctx.obj.redis.secrets() if isinstance(ctx.obj, Context) else ()
    return mask_secrets(line, secrets)


@click.group(cls=RqbeatGroup, context_settings={"auto_envvar_prefix": "RQBEAT", "show_default": True})
@click.option(
    "--redis-url",
    default=DEFAULT_REDIS_URL,
    show_envvar=True,
    help="Redis to keep schedules in: redis://, rediss:// (TLS) or unix://.",
)
@click.option(
    "--namespace",
    default=DEFAULT_NAMESPACE,
    show_envvar=True,
    help="Prefix of every key rqbeat writes.",
)
@connection_options
@click.version_option(package_name="rqbeat")
@click.pass_context
def cli(ctx: click.Context, /, redis_url: str, namespace: str, **connection: str | None) -> None:
    """rqbeat: distributed cron for RQ.

    Schedules live in Redis; `rqbeat run` replicas elect a leader that enqueues
    each due fire onto an RQ queue; RQ workers run it; the next fire is written
    only after the run is acknowledged.

    \b
    Cron expressions have 5 fields (minute hour day-of-month month day-of-week);
    6 fields mean SECONDS FIRST (as in Quartz and Sidekiq).

    \b
    Example:
      RQBEAT_REDIS_URL=rediss://rqbeat-scheduler:secret@redis:6380/0 rqbeat --tls-ca-cert ca.pem status
      rqbeat --sentinel s1:26379,s2:26379,s3:26379 --sentinel-master mymaster run
    """
    ctx.obj = Context(redis=redis_settings(redis_url, **connection), namespace=namespace)
    ctx.call_on_close(ctx.obj.close)


for _command in [*schedules.COMMANDS, *ops.COMMANDS, *aclcmd.COMMANDS]:
    cli.add_command(_command)


def main() -> None:
    """Console entry point."""
    cli(prog_name="rqbeat")


if __name__ == "__main__":  # pragma: no cover
    main()
