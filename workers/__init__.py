"""What runs on the RQ side: the worker class with atomic acknowledgement, and
:func:`current_fire` and the :func:`dead_man` pings for job code.

Start workers with ``rqbeat worker QUEUE...`` or
``rq worker -w workers.Worker -S rq.serializers.JSONSerializer QUEUE...``.
"""

from workers.deadman import dead_man
from workers.fire import Fire, current_fire
from workers.worker import Worker

__all__ = ["Fire", "Worker", "current_fire", "dead_man"]
