"""The fixture's job module: a job function, a class with methods, and a module
(``subprocess``) and a function (``record``) it imports from elsewhere."""

from __future__ import annotations

import subprocess

from tests.jobs import record

__all__ = ["Job", "job", "record", "subprocess"]


def job(tag: str = "runs") -> str:
    """A legitimate job: counts its run like :func:`tests.jobs.record`."""
    return record(tag)


class Job:
    """Methods of a class defined under the prefix may be called."""

    def method(self) -> str:
        return "method"

    @staticmethod
    def static(tag: str = "runs") -> str:
        return record(tag)

    @classmethod
    def build(cls) -> Job:
        return cls()

    def _hidden(self) -> str:
        return "hidden"
