"""The dashboard as a Flask blueprint (mounted by ``rqbeat web`` or into rq-dashboard).

Routes, relative to wherever the blueprint is registered::

    GET  /                          the schedule list (filters and paging in the query)
    GET  /schedule/<id>             one schedule: definition, next fires, history
    POST /schedule/<id>/<action>    pause, resume, trigger, backfill (see scheduler.web.guard)
    GET  /cluster                   leader, replicas, queues and workers
    POST /unlock                    trade the token for an unlock cookie
    GET  /api/schedules, /api/schedule/<id>, /api/cluster   the same data as JSON,
                                    fetched by the pages every few seconds

Every write goes through :class:`scheduler.store.Client`, as the CLI's do: the same
validation, the same history entries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from typing import Any

import redis.exceptions
from flask import Blueprint, Flask, Response, current_app, g, jsonify, redirect, render_template, request
from flask import url_for as flask_url_for
from redis import Redis
from werkzeug.routing import BuildError
from werkzeug.wrappers import Response as WerkzeugResponse

from scheduler.clock import iso, redis_now_ms
from scheduler.connection import mask_secrets
from scheduler.engine import concurrent
from scheduler.errors import RqbeatError, ScheduleNotFound, StaleVersion
from scheduler.keys import DEFAULT_NAMESPACE, Keys
from scheduler.model import ID_PATTERN
from scheduler.ops.status import read_status
from scheduler.protocol import STATES
from scheduler.redisconf import RedisSettings
from scheduler.store import Client
from scheduler.web import present
from scheduler.web.actions import Action, Outcome, Request, acting_user, perform
from scheduler.web.config import WebConfig
from scheduler.web.guard import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SECURITY_HEADERS,
    UNLOCK_COOKIE,
    ActionAuth,
    csrf_ok,
    new_csrf,
    same_origin,
)
from scheduler.web.listing import BadQuery, Query, read_page
from scheduler.web.rqworkers import read_workers

log = logging.getLogger(__name__)

BLUEPRINT = "rqbeat"
HISTORY_ENTRIES = 50
_PAIRING_SLACK = 20  # extra entries so the oldest runs shown still find their dispatch
_VERSION_DIGITS = 18  # a version the form can carry; longer is no version we gave out


def make_blueprint(
    redis_url: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    connection: Redis | None = None,
    allow_actions: bool = False,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    rq_dashboard_url: str | None = None,
) -> Blueprint:
    """The dashboard as a blueprint for your Flask app (rq-dashboard is one)::

        app.register_blueprint(make_blueprint("redis://redis:6379/0"), url_prefix="/schedules")

    Read-only unless ``allow_actions`` with a ``token`` or ``username``/``password``."""
    settings = RedisSettings(url=redis_url) if redis_url is not None else None
    auth = ActionAuth(allow_actions=allow_actions, token=token, username=username, password=password)
    config = WebConfig(
        redis=settings,
        connection=connection,
        namespace=namespace,
        auth=auth,
        rq_dashboard_url=rq_dashboard_url,
    )
    return Dashboard(config).blueprint()


def create_app(config: WebConfig) -> Flask:
    """The standalone app of ``rqbeat web``: the blueprint at the root."""
    app = Flask(__name__)
    app.register_blueprint(Dashboard(config).blueprint())
    return app


class Dashboard:
    """The views, bound to one configuration and one connection pool."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.keys = Keys(config.namespace)

    @cached_property
    def conn(self) -> Redis:
        if self.config.connection is not None:
            return self.config.connection
        assert self.config.redis is not None
        return self.config.redis.connect(namespace=self.config.namespace)

    @cached_property
    def client(self) -> Client:
        return Client(self.conn, self.config.namespace)

    def blueprint(self) -> Blueprint:
        bp = Blueprint(
            BLUEPRINT,
            __name__,
            template_folder="templates",
            static_folder="static",
            static_url_path="/rqbeat-static",
        )
        routes: list[tuple[str, Callable[..., Any], list[str]]] = [
            ("/", self.list_page, ["GET"]),
            ("/api/schedules", self.list_json, ["GET"]),
            ("/schedule/<schedule_id>", self.schedule_page, ["GET"]),
            ("/api/schedule/<schedule_id>", self.schedule_json, ["GET"]),
            ("/schedule/<schedule_id>/<action>", self.act, ["POST"]),
            ("/cluster", self.cluster_page, ["GET"]),
            ("/api/cluster", self.cluster_json, ["GET"]),
            ("/unlock", self.unlock, ["POST"]),
        ]
        for rule, view, methods in routes:
            bp.add_url_rule(rule, view.__name__, view, methods=methods)
        bp.before_request(self._before)
        bp.after_request(self._after)
        bp.register_error_handler(redis.exceptions.RedisError, self._redis_down)
        bp.register_error_handler(BadQuery, lambda exc: self._problem(400, str(exc)))
        bp.register_error_handler(ScheduleNotFound, lambda exc: self._problem(404, str(exc)))
        return bp

    # -- plumbing -------------------------------------------------------------------

    def _before(self) -> None:
        g.rqbeat_csrf_new = CSRF_COOKIE not in request.cookies
        g.rqbeat_csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()

    def _after(self, response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        if getattr(g, "rqbeat_csrf_new", False):
            response.set_cookie(
                CSRF_COOKIE, g.rqbeat_csrf, httponly=True, samesite="Strict", secure=request.is_secure
            )
        return response

    def _redis_down(self, exc: redis.exceptions.RedisError) -> Response:
        reason = mask_secrets(
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self.config.secrets()
        )
        log.warning("web: Redis at %s failed: %s", self.config.where(), reason)
        return self._problem(503, f"Redis at {self.config.where()} did not answer: {reason}")

    def _problem(self, status: int, message: str) -> Response:
        if (request.endpoint or "").endswith("_json"):
            response = jsonify({"error": message})
        else:
            response = Response(render_template("rqbeat/problem.html", message=message, **self._common()))
        response.status_code = status
        return response

    def _url(self, endpoint: str, **values: Any) -> str:
        return flask_url_for(f"{BLUEPRINT}.{endpoint}", **values)

    def _common(self) -> dict[str, Any]:
        auth = self.config.auth
        return {
            "url": self._url,
            "refresh_s": self.config.refresh_s,
            "namespace": self.config.namespace,
            "rq_dashboard": self._rq_dashboard_home(),
            "actions": auth.allow_actions,
            "unlocked": self._authorized(),
            "needs_token": auth.allow_actions and bool(auth.token) and not auth.basic,
            "csrf_field": CSRF_FIELD,
            "csrf": g.get("rqbeat_csrf", ""),
        }

    def _rq_dashboard_home(self) -> str | None:
        if self.config.rq_dashboard_url is not None:
            return self.config.rq_dashboard_url.rstrip("/") + "/"
        if "rq_dashboard" not in current_app.blueprints:
            return None
        try:
            return flask_url_for("rq_dashboard.queues_overview")
        except BuildError:
            return None

    def job_link(self, job_id: str) -> str | None:
        """The job's page in rq-dashboard, when it is there to link to."""
        if self.config.rq_dashboard_url is not None:
            return f"{self.config.rq_dashboard_url.rstrip('/')}/0/view/job/{job_id}"
        if "rq_dashboard" not in current_app.blueprints:
            return None
        try:
            return flask_url_for("rq_dashboard.job_view", instance_number=0, job_id=job_id)
        except BuildError:
            return None

    # -- views ----------------------------------------------------------------------

    def list_page(self) -> str:
        query = Query.parse(request.args)
        page = read_page(self.conn, self.keys, query)
        rows = [present.row(r, page.now_ms) for r in page.records]
        return render_template(
            "rqbeat/list.html",
            states=STATES,  # every state this rqbeat knows: new ones appear in the filter
            query=query,
            page=page,
            rows=rows,
            next_url=self._url("list_page", **query.params(cursor=page.next_cursor))
            if page.next_cursor
            else None,
            api_url=self._url("list_json", **query.params(cursor=query.cursor)),
            **self._common(),
        )

    def list_json(self) -> Response:
        query = Query.parse(request.args)
        page = read_page(self.conn, self.keys, query)
        return jsonify(
            {
                "now": present.wall(page.now_ms, "UTC"),
                "counts": page.counts,
                "examined": page.examined,
                "next_cursor": page.next_cursor,
                "schedules": [
                    {**present.row(r, page.now_ms), "url": self._url("schedule_page", schedule_id=r.id)}
                    for r in page.records
                ],
            }
        )

    def _schedule_data(self, schedule_id: str) -> dict[str, Any]:
        if not ID_PATTERN.fullmatch(schedule_id):
            raise ScheduleNotFound(schedule_id)
        record = self.client.get(schedule_id)
        now_ms = redis_now_ms(self.conn)  # Redis time: relative times agree with the scheduler's
        entries = self.client.history(schedule_id, HISTORY_ENTRIES + _PAIRING_SLACK)
        data = present.schedule(record, now_ms)
        data["history"] = present.history(entries, record, self.job_link)[:HISTORY_ENTRIES]
        data["job_url"] = self.job_link(record.job_id) if record.job_id else None
        backfill = self.client.backfill_status(schedule_id)
        data["backfill"] = None if backfill is None else backfill.to_json() | {"line": backfill.line()}
        data["runs_in_flight"] = [  # overlap = allow_all: each run its own
            {
                "fire_at": iso(r.fire_ms),
                "job_id": r.job_id,
                "attempt": r.attempt,
                "state": str(r.state),
                "job_url": self.job_link(r.job_id),
            }
            for r in concurrent.read_runs(self.conn, self.client.keys, schedule_id)
        ]
        return data

    def schedule_page(self, schedule_id: str) -> Response:
        try:
            message = Outcome(request.args.get("done", "")).say(schedule_id)
        except ValueError:  # none, or not one of ours: no message
            message = ""
        return self._render_schedule(schedule_id, message)

    def _render_schedule(self, schedule_id: str, message: str = "", status: int = 200) -> Response:
        data = self._schedule_data(schedule_id)
        html = render_template(
            "rqbeat/schedule.html",
            s=data,
            message=message,
            refused=status >= 400,
            api_url=self._url("schedule_json", schedule_id=schedule_id),
            **self._common(),
        )
        return Response(html, status=status)

    def schedule_json(self, schedule_id: str) -> Response:
        return jsonify(self._schedule_data(schedule_id))

    def cluster_page(self) -> str:
        return render_template(
            "rqbeat/cluster.html", c=self._cluster(), api_url=self._url("cluster_json"), **self._common()
        )

    def cluster_json(self) -> Response:
        return jsonify(self._cluster())

    def _cluster(self) -> dict[str, Any]:
        report = read_status(self.conn, self.config.namespace)
        return present.cluster(report, read_workers(self.conn), self.config.where())

    # -- actions --------------------------------------------------------------------

    def _authorized(self) -> bool:
        auth = self.config.auth
        if not auth.allow_actions:
            return False
        basic = request.authorization
        return (
            auth.check_bearer(request.headers.get("Authorization"))
            or auth.check_unlock(request.cookies.get(UNLOCK_COOKIE))
            or (basic is not None and auth.check_basic(basic.username, basic.password))
        )

    def act(self, schedule_id: str, action: str) -> Response | WerkzeugResponse:
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        try:
            chosen = Action(action)
        except ValueError:
            return self._problem(404, f"no action {action[:40]!r}")
        if not ID_PATTERN.fullmatch(schedule_id):
            raise ScheduleNotFound(schedule_id)
        shown = request.form.get("version", "")
        # the store checks the version in the script that writes (no read here first)
        version = int(shown) if shown.isdigit() and len(shown) <= _VERSION_DIGITS else -1
        try:
            asked = Request.of(self._acting_user(), request.form)
            outcome = perform(
                self.client, chosen, schedule_id, asked, now_ms=redis_now_ms(self.conn), version=version
            )
        except StaleVersion as exc:
            log.info(
                "web: %s of schedule=%s refused: version %s, page showed %s",
                chosen,
                schedule_id,
                exc.found,
                shown[:20],
            )
            if exc.found == 0:  # removed meanwhile: there is no page to show it on
                raise ScheduleNotFound(schedule_id) from exc
            message = (
                f"refused: {schedule_id} changed meanwhile (version {exc.found} now, the page showed "
                f"{shown[:20] or 'none'}); nothing was done: look again, then retry"
            )
            return self._render_schedule(schedule_id, message, 409)
        except (RqbeatError, ValueError) as exc:  # ValueError: a bad backfill window
            log.info("web: %s of schedule=%s refused: %s", chosen, schedule_id, exc)
            return self._render_schedule(schedule_id, f"refused: {exc}", 409)
        log.info(
            "web: %s schedule=%s version=%s by=%s from %s",
            chosen,
            schedule_id,
            version,
            asked.by,
            request.remote_addr,
        )
        return redirect(self._url("schedule_page", schedule_id=schedule_id, done=str(outcome)), 303)

    def _acting_user(self) -> str:
        """The basic-auth user when valid credentials came with the request, else the
        token's label (the request passed :meth:`_refusal` already)."""
        basic = request.authorization
        auth = self.config.auth
        if basic is not None and auth.check_basic(basic.username, basic.password):
            return acting_user(basic.username)
        return acting_user(None)

    def _refusal(self) -> Response | None:
        """Why this action request is refused (read-only, no credentials, CSRF), or None."""
        auth = self.config.auth
        if not auth.allow_actions:
            return self._problem(403, "this dashboard is read-only (start it with --allow-actions)")
        if not self._authorized():
            response = self._problem(401, "actions need credentials: the token or the basic-auth user")
            if auth.basic:
                response.headers["WWW-Authenticate"] = 'Basic realm="rqbeat", charset="UTF-8"'
            return response
        if not same_origin(request.headers.get("Origin"), request.host_url):
            return self._problem(403, "refused: the request came from another site")
        if not csrf_ok(request.cookies.get(CSRF_COOKIE), request.form.get(CSRF_FIELD)):
            return self._problem(403, "refused: the form is stale or forged (CSRF check); reload the page")
        return None

    def unlock(self) -> Response | WerkzeugResponse:
        """The token form: a browser that knows the token gets the unlock cookie."""
        auth = self.config.auth
        back = self._url("list_page")
        if not auth.allow_actions or not auth.token:
            return self._problem(403, "there is nothing to unlock here")
        if not same_origin(request.headers.get("Origin"), request.host_url) or not csrf_ok(
            request.cookies.get(CSRF_COOKIE), request.form.get(CSRF_FIELD)
        ):
            return self._problem(403, "refused: the form is stale or forged (CSRF check); reload the page")
        if not auth.check_token(request.form.get("token")):
            log.warning("web: a wrong token was offered from %s", request.remote_addr)
            return self._problem(401, "wrong token")
        target = request.form.get("next", "")
        response = redirect(target if target.startswith("/") and not target.startswith("//") else back, 303)
        response.set_cookie(
            UNLOCK_COOKIE, auth.unlock_value(), httponly=True, samesite="Strict", secure=request.is_secure
        )
        return response
