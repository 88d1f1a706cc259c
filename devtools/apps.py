"""A user's app outside the repository, for tests and benchmarks that go the user's way.

``rqbeat worker`` imports job code from its working directory (or ``--path``), so the
tests and benchmarks write the package ``myapp`` into a directory of their own and
start workers there, never relying on the repository being importable.
"""

from __future__ import annotations

from pathlib import Path


def write_app(root: Path, reports_py: str) -> Path:
    """``root/myapp/tasks/reports.py`` holding ``reports_py`` (and the two packages
    above it); returns ``root``, the directory to start workers in."""
    tasks = root / "myapp" / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (root / "myapp" / "__init__.py").write_text("")
    (tasks / "__init__.py").write_text("")
    (tasks / "reports.py").write_text(reports_py)
    return root
