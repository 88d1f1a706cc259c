"""``rqbeat web``: the dashboard (scheduler.web) on a local port.

Flask is optional (``rqbeat[web]``); without it the command says so in one line.
The credentials that unlock actions come from the environment only, never from
a command line that ``ps`` shows.
"""

from __future__ import annotations

import logging
import os

import click

from scheduler.cli.common import Context, pass_context
from scheduler.cli.ops import setup_logging
from scheduler.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORT = 9182  # rq-dashboard's 9181, plus one
TOKEN_ENV = "RQBEAT_WEB_TOKEN"
USERNAME_ENV = "RQBEAT_WEB_USERNAME"
PASSWORD_ENV = "RQBEAT_WEB_PASSWORD"
_FLASK_PARTS = ("flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous", "blinker")


@click.command()
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=DEFAULT_PORT, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--allow-actions",
    is_flag=True,
    help=f"Offer pause, resume and trigger; needs {TOKEN_ENV}, or {USERNAME_ENV} and {PASSWORD_ENV}.",
)
@click.option(
    "--rq-dashboard-url",
    default=None,
    help="rq-dashboard's address (e.g. http://host:9181/), to link each run to its job there.",
)
@click.option("--refresh", default=5, type=click.IntRange(1, 3600), help="Seconds between live refreshes.")
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Logging threshold; info logs every action taken.",
)
@pass_context
def web(
    ctx: Context,
    host: str,
    port: int,
    allow_actions: bool,
    rq_dashboard_url: str | None,
    refresh: int,
    log_level: str,
) -> None:
    """Serve the web dashboard: schedules, their next fires and history, the cluster.

    Read-only unless --allow-actions. The token that unlocks actions is read from
    RQBEAT_WEB_TOKEN (or basic auth from RQBEAT_WEB_USERNAME and RQBEAT_WEB_PASSWORD).

    \b
    Examples:
      rqbeat web                                  # http://127.0.0.1:9182/
      RQBEAT_WEB_TOKEN=$(openssl rand -hex 16) rqbeat web --allow-actions
      rqbeat web --host 0.0.0.0 --rq-dashboard-url http://rq.example:9181/
    """
    try:
        from werkzeug.serving import make_server  # noqa: PLC0415 - Flask is an optional extra

        from scheduler.web import ActionAuth, WebConfig, create_app  # noqa: PLC0415
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _FLASK_PARTS:
            raise
        raise click.ClickException("rqbeat web needs Flask: pip install 'rqbeat[web]'") from None
    auth = ActionAuth(
        allow_actions=allow_actions,
        token=os.environ.get(TOKEN_ENV) or None,
        username=os.environ.get(USERNAME_ENV) or None,
        password=os.environ.get(PASSWORD_ENV) or None,
    )
    config = WebConfig(
        redis=ctx.redis,
        namespace=ctx.namespace,
        auth=auth,
        rq_dashboard_url=rq_dashboard_url,
        refresh_s=refresh,
    )
    setup_logging(log_level)
    try:
        server = make_server(host, port, create_app(config), threaded=True)
    except OSError as exc:
        raise ConfigError("--port", port, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    mode = "actions allowed" if allow_actions else "read-only"
    log.info(
        "rqbeat web on http://%s:%s/ (Redis at %s, namespace %s, %s)",
        host,
        server.server_port,
        ctx.redis.describe(),
        ctx.namespace,
        mode,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("rqbeat web stopped")


COMMANDS = [web]
