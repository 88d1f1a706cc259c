"""rqbeat benchmarks: one module per scenario, run by :mod:`bench.runner`.

``python -m bench`` runs them all (about 15 minutes on 2 cores) and writes
``bench/RESULTS.md``; ``--quick`` is a ~2 minute smoke run with small N; ``--only``
picks scenarios. Every scenario starts its own private redis-server on a free port
and real ``python -m scheduler run`` / worker processes.
"""
