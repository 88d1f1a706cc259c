"""The running scheduler: the leader's loop and what it drives.

``service`` (the loop), ``lease`` (fenced leadership), ``dispatch`` (due → RQ jobs),
``watchdog`` (in-flight runs judged from RQ's state), ``liveness`` (is a run's worker
alive, by Redis's clock), ``runs`` (in-flight state and the
ack), ``rqjob`` (RQ's job format), ``clusterstats`` and ``metrics``.

Imports the domain (``scheduler.*`` at the top); never ``scheduler.ops`` or ``scheduler.cli``.
"""
