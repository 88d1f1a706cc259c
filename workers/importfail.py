"""A run whose target does not import is one line, not a traceback per attempt.

RQ resolves a job's target inside ``job.perform()`` (``rq.utils.import_attribute``)
and, when nothing imports, raises ``ValueError: Invalid attribute name: myapp.jobs.ok``:
the real cause (``No module named 'myapp'``: the worker was started where the app is
not on the path) is swallowed, and the worker logs the whole traceback on every
retry. :func:`import_problem` names the cause instead, by resolving the target the
way RQ does (:func:`scheduler.allow.resolve`, the one importer rqbeat has), and only
for the exceptions RQ's resolution raises, so a job's own ``ValueError`` keeps its
traceback.
"""

from __future__ import annotations

from rq.exceptions import DeserializationError
from rq.job import Job

from scheduler.allow import resolve

#: What ``rq.utils.import_attribute`` raises for a target it cannot reach (RQ 2.12, 3.0).
RQ_UNRESOLVED = "Invalid attribute name"


def import_problem(job: Job, exc: BaseException | None) -> str | None:
    """``cannot import myapp.jobs: No module named 'myapp'`` when ``exc`` is RQ failing
    to resolve ``job``'s target in this process; None for any other failure."""
    if not isinstance(exc, ImportError) and not (isinstance(exc, ValueError) and RQ_UNRESOLVED in str(exc)):
        return None
    try:
        target = job.func_name
    except DeserializationError:
        return None
    if not target:
        return None
    walk = resolve(target)
    return walk if isinstance(walk, str) else None
