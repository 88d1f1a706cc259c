"""A process whose wall clock is off, for the clock-skew tests (see ``sitecustomize``)."""

from __future__ import annotations

from pathlib import Path

from devtools.skewclock.sitecustomize import OFFSET_ENV

DIRECTORY = Path(__file__).resolve().parent


def skewed_env(offset_s: float, pythonpath: str) -> dict[str, str]:
    """Environment for a subprocess whose wall clock is ``offset_s`` seconds off
    (negative: behind): this directory first on ``pythonpath``."""
    return {"PYTHONPATH": f"{DIRECTORY}:{pythonpath}", OFFSET_ENV: str(offset_s)}
