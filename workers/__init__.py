"""What runs on the RQ side: the worker classes with atomic acknowledgement, and
:func:`current_fire` and the :func:`dead_man` pings for job code.

Start workers with ``rqbeat worker QUEUE...`` (``--mode fork|simple|pool``) or
``rq worker -w workers.Worker -S rq.serializers.JSONSerializer QUEUE...``
(``-w workers.SimpleWorker``: the non-forking one).
"""

from workers.deadman import dead_man
from workers.fire import Fire, current_fire
from workers.modes import SimpleWorker
from workers.worker import Worker

__all__ = ["Fire", "SimpleWorker", "Worker", "current_fire", "dead_man"]
