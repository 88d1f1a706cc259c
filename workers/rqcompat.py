"""The seam between :class:`workers.Worker` and the RQ release it runs on: 2.12 or 3.x.

RQ 3 changed the internals the worker overrides:

- ``handle_job_success``, ``handle_job_failure`` and ``cleanup_execution`` take the
  run's ``execution``. It must reach RQ's own ``cleanup_execution``: without it RQ 3
  keeps the execution in ``rq:wip:<queue>`` and ``rq:executions:<job>`` and the
  worker shows busy forever. The overrides take RQ's extra arguments as ``**rq_args``
  and pass them on untouched, which is right on both releases.
- ``get_heartbeat_ttl(job)`` became ``get_heartbeat_ttl(job, working_time)``, and
  ``Worker.current_job_working_time`` (where 2.12 kept that time) is gone.

What this RQ does is decided once, here, at import, from RQ's own signatures (not
its version number: a 3.x that reverts a change is still handled).
``tests/integration/test_worker_hook.py`` runs against both releases in CI.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from rq import Worker as RQWorker


def _takes(method: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(method).parameters


#: RQ 3: the success/failure handlers and ``cleanup_execution`` carry the execution.
PASSES_EXECUTION = _takes(RQWorker.handle_job_success, "execution")
#: RQ 3: RQ hands ``get_heartbeat_ttl`` the job's working time; 2.12 keeps it on the worker.
HEARTBEAT_GETS_WORKING_TIME = _takes(RQWorker.get_heartbeat_ttl, "working_time")


def working_time_s(worker: RQWorker, given: float | None) -> float:
    """How long the current job has run (seconds), however this RQ tells it."""
    if given is not None or HEARTBEAT_GETS_WORKING_TIME:
        return given or 0.0
    return float(getattr(worker, "current_job_working_time", 0.0))
