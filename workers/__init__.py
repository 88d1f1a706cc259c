"""What runs on the RQ side: the worker class with atomic acknowledgement, and
:func:`current_fire` for job code.

Start workers with ``rqbeat worker QUEUE...`` or
``rq worker -w workers.Worker -S rq.serializers.JSONSerializer QUEUE...``.
"""

from workers.fire import Fire, current_fire
from workers.worker import Worker

__all__ = ["Fire", "Worker", "current_fire"]
