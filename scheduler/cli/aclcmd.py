"""``rqbeat acl``: print the least-privilege ACL user for a role (no Redis needed)."""

from __future__ import annotations

import click

from scheduler.cli.common import Context, echo_json, json_option, pass_context
from scheduler.ops.acl import DEFAULT_USERS, ROLES, acl_rules, setuser_command


@click.command()
@click.argument("role", type=click.Choice(ROLES))
@click.option("--user", default=None, help="ACL user name (default: rqbeat-<role>).")
@json_option
@pass_context
def acl(ctx: Context, role: str, user: str | None, as_json: bool) -> None:
    """Print the ACL SETUSER line for a least-privilege scheduler or worker user.

    The line sets no password; add one separately so it never passes through
    rqbeat. Covers the --namespace in effect. Job code that uses Redis needs
    its own keys added.

    \b
    Example:
      rqbeat acl scheduler | redis-cli
      redis-cli ACL SETUSER rqbeat-scheduler '>a-long-secret'
      export RQBEAT_REDIS_URL=redis://rqbeat-scheduler:a-long-secret@redis:6379/0
    """
    name = user or DEFAULT_USERS[role]
    if as_json:
        echo_json({"role": role, "user": name, "rules": list(acl_rules(role, ctx.namespace))})
        return
    click.echo(setuser_command(role, name, ctx.namespace))


COMMANDS = [acl]
