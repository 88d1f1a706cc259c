"""``rqbeat`` imports a command's module only when that command is used
(scheduler.cli.lazy): the list of commands in ``--help`` and in shell completion comes
from the summaries, which must stay equal to the commands' own help."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from scheduler.cli import lazy
from scheduler.cli.app import cli

#: The modules that define commands, each with its COMMANDS list.
COMMAND_MODULES = sorted({spec.module for spec in lazy.COMMANDS.values()})


@pytest.mark.parametrize("name", sorted(lazy.COMMANDS))
def test_each_summary_shortens_as_the_command_s_own_help(name: str) -> None:
    spec = lazy.COMMANDS[name]
    command = spec.load()
    assert command.name == name
    for limit in (20, 45, 66, 120, 10_000):  # click's limit follows the terminal's width
        assert spec.placeholder().get_short_help_str(limit) == command.get_short_help_str(limit)


def test_every_command_of_the_modules_is_listed() -> None:
    defined = {
        command.name for module in COMMAND_MODULES for command in importlib.import_module(module).COMMANDS
    }
    assert defined == set(lazy.COMMANDS)


def loaded_modules(*args: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``rqbeat ARGS``."""
    code = (
        "import json, sys\n"
        "from scheduler.cli.app import cli\n"
        "try:\n"
        f"    cli({list(args)!r}, prog_name='rqbeat')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_help_imports_no_command_and_no_redis() -> None:
    modules = loaded_modules("--help")
    assert not modules & set(COMMAND_MODULES)
    assert not {m for m in modules if m == "redis" or m.startswith(("redis.", "rq"))}


def test_a_command_imports_its_own_module_only() -> None:
    modules = loaded_modules("ls", "--help")
    assert modules & set(COMMAND_MODULES) == {"scheduler.cli.views"}
    # the engine, the dashboard and the metrics stay out
    unwanted = ("scheduler.engine", "scheduler.web", "prometheus_client")
    assert not {m for m in modules if m.startswith(unwanted)}


def test_help_lists_every_command_with_its_short_help() -> None:
    result = CliRunner().invoke(cli, ["--help"], prog_name="rqbeat", terminal_width=100)
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed] == sorted(lazy.COMMANDS)
    assert "  rm        Remove schedules and their history." in listed


def test_completion_of_command_names_gives_their_short_help() -> None:
    env = {"_RQBEAT_COMPLETE": "zsh_complete", "COMP_WORDS": "rqbeat l", "COMP_CWORD": "1"}
    result = CliRunner().invoke(cli, [], env=env, prog_name="rqbeat")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()  # zsh: type, value, help, one per line
    offered = {lines[i + 1]: lines[i + 2] for i in range(0, len(lines), 3)}
    assert set(offered) == {"log", "ls"}
    assert offered["ls"].startswith("List schedules: trigger, timezone, state")


def test_a_loaded_command_gets_its_environment_variables_once() -> None:
    group = cli
    assert isinstance(group, click.Group)
    context = click.Context(group)
    first = group.get_command(context, "pause")
    assert first is not None and group.get_command(context, "pause") is first
    envvars = [p.envvar for p in first.params if isinstance(p, click.Option) and p.name != "help"]
    assert "RQBEAT_REDIS_URL" in envvars
    assert len(envvars) == len(set(map(str, envvars)))  # the global options were added once


def test_the_package_s_public_names_import_on_first_use() -> None:
    import scheduler  # noqa: PLC0415 - the package itself is under test

    for name in scheduler.__all__:
        value = getattr(scheduler, name)
        assert value.__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        scheduler.Nope  # noqa: B018 - the lookup is the test
