"""A dead-man switch from job code: Healthchecks-style pings around each run.

rqbeat's own alerts (webhooks, metrics) come from rqbeat; they cannot tell you that
rqbeat itself, Redis, or every worker is gone. A dead-man service (Healthchecks,
Cronitor, Dead Man's Snitch...) can: it expects a ping per period and alerts when
none arrives. Ping from the job, so a ping means the work really ran::

    from workers import dead_man

    def nightly_report() -> None:
        with dead_man("https://hc-ping.com/<your-check-uuid>"):
            build_and_send_report()

``/start`` when the run begins, the plain URL when it succeeded, ``/fail`` when it
raised. ``rid`` ties the three pings of one run together (Healthchecks then shows
each run's duration); it is derived from :func:`workers.current_fire`'s key and the
attempt, so a retry of the same fire is a run of its own. A ping that cannot be
delivered is logged, never raised: the dead-man service notices the silence anyway.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from workers.fire import current_fire

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0


def run_id() -> str | None:
    """A UUID per run (Healthchecks wants one): the same for the pings of one attempt."""
    fire = current_fire()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{fire.key}:{fire.attempt}")) if fire else None


def ping(url: str, rid: str | None) -> None:
    """GET ``url`` (with ``?rid=``); a failure is logged, never raised."""
    target = f"{url}?{urllib.parse.urlencode({'rid': rid})}" if rid else url
    try:
        with urllib.request.urlopen(target, timeout=TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError) as exc:
        log.warning("dead-man ping failed url=%s error=%s", url, exc)


@contextmanager
def dead_man(url: str) -> Iterator[None]:
    """Ping ``url``/start, then ``url`` on success or ``url``/fail on an exception."""
    rid = run_id()
    ping(f"{url}/start", rid)
    try:
        yield
    except BaseException:
        ping(f"{url}/fail", rid)
        raise
    ping(url, rid)
