"""The import-linter contract that keeps the domain free of engine, ops, web and CLI
names every domain module: a new module at the top of ``scheduler/`` must join it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import scheduler

ROOT = Path(__file__).resolve().parents[2]
ROOMS = {"engine", "ops", "cli", "web"}  # the layers above the domain
NOT_MODULES = {"__init__", "__main__"}


def test_the_domain_contract_lists_every_domain_module() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (domain,) = [c for c in contracts if c["name"].startswith("the domain imports")]
    package = Path(scheduler.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - NOT_MODULES
    packages = {p.name for p in package.iterdir() if (p / "__init__.py").exists()} - ROOMS
    expected = {f"scheduler.{name}" for name in modules | packages}
    assert set(domain["source_modules"]) == expected
    assert set(domain["forbidden_modules"]) == {f"scheduler.{room}" for room in ROOMS}
