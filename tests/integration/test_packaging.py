"""The wheel a user installs: built from this checkout, installed into a clean virtualenv
(no editable install, no repository on the path), it runs `rqbeat` and carries only the
shipped packages."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devtools.processes import REPO

pytestmark = [pytest.mark.integration]

UV = Path(sys.executable).with_name("uv")


def run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--wheel", "--out-dir", out, REPO, cwd=out)
    (built,) = out.glob("rqbeat-*.whl")
    return built


def test_wheel_ships_the_runtime_packages_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("rqbeat-")}
    assert tops == {"scheduler", "workers"}
    expected = {"scheduler/py.typed", "workers/py.typed", "scheduler/engine/service.py", "workers/demo.py"}
    assert expected <= set(names)
    dashboard = {"scheduler/web/templates/rqbeat/list.html", "scheduler/web/static/rqbeat.js"}
    assert dashboard <= set(names)  # package data: `rqbeat web` fetches nothing at run time


def test_wheel_installs_into_a_clean_virtualenv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    lock = REPO / "requirements.lock"
    run(UV, "pip", "install", "--quiet", "--python", python, wheel, "-c", lock, cwd=tmp_path)

    assert "rqbeat, version" in run(venv / "bin" / "rqbeat", "--version", cwd=tmp_path)
    fires = run(venv / "bin" / "rqbeat", "next", "30 2 * * *", "--tz", "Europe/Berlin", "-n", "2",
                "--after", "2027-03-27T00:00:00Z", "--json", cwd=tmp_path)  # fmt: skip
    assert '"utc": "2027-03-27T01:30:00.000Z"' in fires  # 02:30 in Berlin (CET, UTC+1)
    where = run(python, "-c", "import scheduler, workers; print(scheduler.__file__, workers.__file__)",
                cwd=tmp_path)  # fmt: skip
    assert where.count(str(venv)) == 2  # the installed copies, not this checkout
    # Flask is the optional extra rqbeat[web]: without it, one line says how to get it
    done = subprocess.run([venv / "bin" / "rqbeat", "web"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: rqbeat web needs Flask: pip install 'rqbeat[web]'"
