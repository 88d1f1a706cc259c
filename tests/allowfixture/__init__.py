"""A package that an allow-list names (``--allow tests.allowfixture``) and that, like
real application code, imports things it must not expose: ``os`` as a module, a
re-exported ``system``, a submodule importing ``subprocess``. Only what it defines
itself may be called through it (scheduler.allow)."""

from __future__ import annotations

import functools
import os
from os import system

from tests.allowfixture import mod
from tests.allowfixture.mod import Job, job

#: An alias of a builtin: defined in ``builtins``, not here.
evaluate = eval
#: A callable object whose class lives in ``functools``.
fixed = functools.partial(os.getcwd)
#: A plain value under the prefix: not callable.
NAME = "allowfixture"

__all__ = ["NAME", "Job", "evaluate", "fixed", "job", "mod", "os", "system"]
