"""The one line a target that does not import becomes (``scheduler.allow.resolve``,
``workers.importfail``): what the worker logs and records, and add/apply warn with."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from scheduler.allow import resolve
from workers.importfail import import_problem


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``shop/`` on sys.path: ``shop.jobs`` imports, ``shop.broken`` needs a missing
    dependency; every ``shop`` module is forgotten afterwards."""
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "jobs.py").write_text("def ok() -> None:\n    pass\n")
    (tmp_path / "shop" / "broken.py").write_text(
        "import not_installed_dependency\n\ndef run() -> None: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "shop" or m.startswith("shop.")]:
        del sys.modules[name]


def test_the_module_the_target_names_is_what_cannot_be_imported(app: Path) -> None:
    assert resolve("nowhere_app.jobs.ok") == "cannot import nowhere_app.jobs: No module named 'nowhere_app'"
    assert resolve("shop.missing.ok") == "cannot import shop.missing: No module named 'shop.missing'"
    # the module exists but its own import fails: the missing dependency, not "no attribute"
    assert (
        resolve("shop.broken.run") == "cannot import shop.broken: No module named 'not_installed_dependency'"
    )
    # below a plain module the rest is attributes (pkg.mod.Class.method)
    assert resolve("shop.jobs.nope") == "shop.jobs has no attribute nope"
    assert resolve("shop.jobs.Klass.method") == "shop.jobs has no attribute Klass.method"
    assert not isinstance(resolve("shop.jobs.ok"), str)


def job(target: str) -> Job:
    return Job.create(target, connection=Redis(), serializer=JSONSerializer)


def test_only_rqs_own_failure_to_resolve_is_an_import_problem(app: Path) -> None:
    rq_error = ValueError("Invalid attribute name: nowhere_app.jobs.ok")
    line = "cannot import nowhere_app.jobs: No module named 'nowhere_app'"
    assert import_problem(job("nowhere_app.jobs.ok"), rq_error) == line
    assert import_problem(job("nowhere_app.jobs.ok"), ModuleNotFoundError("x")) == line
    # the job's own errors keep their traceback
    assert import_problem(job("nowhere_app.jobs.ok"), ValueError("bad input")) is None
    assert import_problem(job("nowhere_app.jobs.ok"), RuntimeError("boom")) is None
    assert import_problem(job("nowhere_app.jobs.ok"), None) is None
    # a target that imports here raised ImportError itself: not an import problem of the target
    assert import_problem(job("shop.jobs.ok"), ImportError("inside the job")) is None
