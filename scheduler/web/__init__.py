"""The web dashboard: ``rqbeat web``, or a Flask blueprint for rq-dashboard or any app.

Needs Flask (``pip install 'rqbeat[web]'``)::

    from scheduler.web import make_blueprint
    app.register_blueprint(make_blueprint("redis://redis:6379/0"), url_prefix="/schedules")

A layer above :mod:`scheduler.ops` and :mod:`scheduler.engine`, beside the CLI: it
reads through the domain's store and the operations' status report, and writes only
through :class:`scheduler.store.Client`.
"""

from __future__ import annotations

from scheduler.web.actions import Action, Outcome
from scheduler.web.app import Dashboard, create_app, make_blueprint
from scheduler.web.config import WebConfig
from scheduler.web.guard import ActionAuth

#: The name the issue gave it; the same function.
blueprint = make_blueprint

__all__ = [
    "Action",
    "Outcome",
    "ActionAuth",
    "Dashboard",
    "WebConfig",
    "blueprint",
    "create_app",
    "make_blueprint",
]
