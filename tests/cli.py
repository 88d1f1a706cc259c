"""Running the ``rqbeat`` command in-process (click's CliRunner) against a test's own
Redis, and reading its result."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result

from scheduler.cli.app import cli

#: ``rqbeat(*args, env=None)``: the command line after ``rqbeat --redis-url <server>``.
Invoke = Callable[..., Result]


def invoker(redis_url: str) -> Invoke:
    """Run ``rqbeat --redis-url <redis_url> ARGS...``."""

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(cli, ["--redis-url", redis_url, *args], env=env, catch_exceptions=True)

    return invoke


def ok(result: Result) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    return result.stdout  # stderr: warnings (a target that does not import here)


def json_of(result: Result) -> Any:
    return json.loads(ok(result))
