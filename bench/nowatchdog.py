"""Experiment only (``bench.profile --what-if``): ``rqbeat run`` with the watchdog switched
off, to measure dispatch alone. Invoked as ``python bench/nowatchdog.py -m scheduler ARGS``
(the interpreter command the benchmarks' replica launcher builds)."""

from __future__ import annotations

import sys

from scheduler.cli import main
from scheduler.engine import watchdog


def _no_checks(self: watchdog.Watchdog, now_ms: int) -> int:
    return 0


if __name__ == "__main__":
    watchdog.Watchdog.check = _no_checks  # type: ignore[method-assign]
    sys.argv = ["rqbeat", *sys.argv[3:]]  # drop "-m scheduler"
    main()
