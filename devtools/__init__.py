"""Tools for developing rqbeat, not shipped in the wheel.

``localredis`` finds a Redis binary and a free port, ``processes`` runs a private Redis
and real subprocesses, ``cluster`` runs replicas and workers, ``demo`` is ``make run``,
and ``chaos`` is the fault-injection rig shared by the tests and ``make chaos``.
"""
