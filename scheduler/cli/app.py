"""The click group, shared options and the translation of errors to exit codes."""

from __future__ import annotations

import os
from typing import Any

import click
from click.shell_completion import CompletionItem

from scheduler.cli import lazy
from scheduler.cli.connopts import add_to_command, global_values, group_options
from scheduler.connection import mask_secrets
from scheduler.errors import RedisFull, RqbeatError, ScheduleNotFound


class BadInput(click.ClickException):
    """Invalid input: one line naming the field and the reason, exit code 2."""

    exit_code = 2


class UsageProblem(click.UsageError):
    """A usage error (unknown option, bad choice, missing argument) shown as one line:
    click's own prints the usage and a hint on lines of their own."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message().rstrip('.')}{hint}", file=file, err=True)


def _one_line(exc: click.UsageError) -> click.UsageError:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):  # bare `rqbeat`: the help is wanted
        return exc
    return UsageProblem(exc.format_message(), exc.ctx)


class RqbeatGroup(click.Group):
    """Maps rqbeat's errors to one-line messages and exit codes; no tracebacks. Imports
    a command's module only when that command is used (:mod:`scheduler.cli.lazy`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *lazy.COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        spec = lazy.COMMANDS.get(cmd_name)
        if command is None and spec is not None:
            command = spec.load()
            self.add_command(command, cmd_name)
        return command

    def load_all(self) -> dict[str, click.Command]:
        """Every command, each imported now (for tests and tools that walk them all)."""
        context = click.Context(self)
        found = {name: self.get_command(context, name) for name in self.list_commands(context)}
        return {name: command for name, command in found.items() if command is not None}

    def _summary(self, name: str) -> click.Command:
        """The command if it is loaded, else its stand-in: what lists of commands show."""
        loaded = self.commands.get(name)
        return loaded if loaded is not None else lazy.COMMANDS[name].placeholder()

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's list of commands, from the summaries: ``--help`` imports no command."""
        commands = [(name, self._summary(name)) for name in self.list_commands(ctx)]
        visible = [(name, command) for name, command in commands if not command.hidden]
        if not visible:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in visible)  # click's spacing
        with formatter.section("Commands"):
            formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in visible])

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        """The command names with their short help (from the summaries), then the
        group's options, as click's own would."""
        names = [name for name in self.list_commands(ctx) if name.startswith(incomplete)]
        found = [(name, self._summary(name)) for name in names]
        results = [
            CompletionItem(name, help=cmd.get_short_help_str()) for name, cmd in found if not cmd.hidden
        ]
        results.extend(click.Command.shell_complete(self, ctx, incomplete))
        return results

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Every option gets the environment variable RQBEAT_<COMMAND>_<OPTION>, named
        after the option as typed (``--json`` → ``RQBEAT_LS_JSON``, not the Python
        name), and --help shows it. The global options (``--redis-url``, ...) are
        accepted after the command too, with their own variables."""
        add_to_command(cmd)
        command = name or cmd.name or ""
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name != "help":
                if param.envvar is None:
                    long = [o for o in param.opts if o.startswith("--")]
                    option = long[0][2:] if long else str(param.name)
                    param.envvar = f"RQBEAT_{command}_{option}".upper().replace("-", "_")
                param.show_envvar = True
        super().add_command(cmd, name)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:  # the group's own options and arguments
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        # imported here, not at the top: `rqbeat --help` and `--version` import no redis
        import redis.exceptions  # noqa: PLC0415

        from scheduler.cli.common import Context  # noqa: PLC0415

        if os.environ.get("NO_COLOR"):  # https://no-color.org: any non-empty value
            ctx.color = False
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a command's options and arguments
            raise _one_line(exc) from None
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
        except redis.exceptions.OutOfMemoryError:  # a write outside the client's own (RedisFull)
            what = f"a write of 'rqbeat {ctx.invoked_subcommand}'"
            raise click.ClickException(str(RedisFull(what, "the steps before it stand"))) from None
        except redis.exceptions.ResponseError as exc:  # NOPERM (ACL), WRONGTYPE (key edited by hand)
            raise click.ClickException(f"Redis refused the command: {_first_line(ctx, exc)}") from None


def _first_line(ctx: click.Context, exc: BaseException) -> str:
    """The error's first line, with any password it might quote masked."""
    from scheduler.cli.common import Context  # noqa: PLC0415 - see RqbeatGroup.invoke

    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    secrets = ctx.obj.redis.secrets() if isinstance(ctx.obj, Context) else ()
    return mask_secrets(line, secrets)


@click.group(cls=RqbeatGroup, context_settings={"auto_envvar_prefix": "RQBEAT", "show_default": True})
@group_options
@click.version_option(package_name="rqbeat")
@click.pass_context
def cli(ctx: click.Context, /) -> None:
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
      rqbeat --redis-url redis://localhost:6379/0 add hello app.jobs.hello --every 30s
      rqbeat ls
      rqbeat ls -u redis://redis:6379/1   # the global options work after the command too

    Colours appear only on a terminal, and never when NO_COLOR is set.
    """
    from scheduler.cli.common import Context  # noqa: PLC0415 - see RqbeatGroup.invoke

    ctx.obj = Context(global_values(ctx))
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    """Console entry point."""
    cli(prog_name="rqbeat")


if __name__ == "__main__":  # pragma: no cover
    main()
