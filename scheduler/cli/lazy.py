"""The commands of ``rqbeat``, imported only when one is used.

``rqbeat ls`` needs the listing and the store, not the scheduler engine, the web
dashboard, RQ's worker or Prometheus; importing them all made every command start in
0.35-0.8 s. Each command is named here with the module that defines it and the first
paragraph of its help, so ``rqbeat --help`` and a Tab press after ``rqbeat`` list
every command with its short help without importing any (``tests/unit/test_cli_lazy.py``
keeps the summaries equal to the commands' own help).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """Where the command ``name`` is defined, and its help's first paragraph."""

    name: str
    module: str
    attribute: str
    summary: str

    def load(self) -> click.Command:
        """The command itself (imports its module)."""
        command = getattr(importlib.import_module(self.module), self.attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.module}.{self.attribute} is not a click command")
        return command

    def placeholder(self) -> click.Command:
        """A stand-in that shortens its help exactly as the command would: for the list
        of commands, never to be run."""
        return click.Command(self.name, help=self.summary)


def _spec(name: str, where: str, summary: str) -> LazyCommand:
    module, attribute = where.rsplit(":", 1)
    return LazyCommand(name, f"scheduler.cli.{module}", attribute, summary)


COMMANDS: dict[str, LazyCommand] = {
    spec.name: spec
    for spec in (
        _spec(
            "acl", "aclcmd:acl", "Print the ACL SETUSER line for a least-privilege scheduler or worker user."
        ),
        _spec("add", "edit:add", "Create the schedule ID that calls TARGET (pkg.module.func)."),
        _spec(
            "apply",
            "applycmd:apply_file",
            "Create, update (and with --prune remove) schedules to match a TOML FILE.",
        ),
        _spec(
            "backfill",
            "backfillcmd:backfill_cmd",
            "Run each fire of ID in [--from, --to) once, oldest first, beside its live fires.",
        ),
        _spec(
            "check",
            "ops:check",
            "Health and consistency check: exit 0 when a leader holds the lease, no fire is overdue by more "
            "than --max-lag, nothing stalls (no run queued too long, no queue without a live worker or with "
            "one that cannot read rqbeat's jobs, no schedule broken or without a recent success: the "
            "README's \"Health\"), no rqbeat worker's clock is off Redis time by more than "
            "--max-clock-offset and the stored state is consistent; exit 1 with one line per finding "
            "otherwise (--warn: the same lines, exit 0).",
        ),
        _spec(
            "history",
            "views:history",
            "Show the history of ID: each dispatch with its attempt, job id, outcome, lateness (fire to "
            "start on a worker) and duration (start to end; dispatch to acknowledgement when a plain rq "
            "worker ran it); failures, give-ups, missed fires, alerts; and the edits (updated, paused, "
            "resumed, triggered), each with who made it (BY), what changed and its note.",
        ),
        _spec(
            "import",
            "importcmd:import_schedules",
            "Read SOURCE's schedules and write them as an rqbeat TOML file for `rqbeat apply`.",
        ),
        _spec(
            "log",
            "audited:edit_log",
            "Show the edit log of the namespace: who created, changed, paused, resumed, triggered, "
            "backfilled or removed which schedule, when, the version after it, what changed and the note.",
        ),
        _spec(
            "ls",
            "views:list_schedules",
            "List schedules: trigger, timezone, state, next fire on the schedule's own wall clock (and how "
            "soon), last result (and how long ago).",
        ),
        _spec(
            "next",
            "views:next_fires",
            "Preview the next fires of stored schedule ID, or of a cron EXPR: on the wall clock of its zone, "
            "in UTC, and how far from now.",
        ),
        _spec("pause", "schedules:pause", "Stop firing ID until resumed (a run in flight finishes)."),
        _spec(
            "resume",
            "schedules:resume",
            "Fire ID again, from its next fire after now (fires missed while paused are not run).",
        ),
        _spec("rm", "schedules:remove", "Remove schedules and their history."),
        _spec("run", "ops:run", "Run a scheduler replica."),
        _spec(
            "set",
            "edit:set_settings",
            "Change some settings of the schedule ID; the others (args included) stay.",
        ),
        _spec("show", "schedules:show", "Show one schedule: definition and state."),
        _spec(
            "status",
            "ops:status",
            "Leader (epoch, lease left), replicas (heartbeat age), schedules by state, the oldest overdue "
            "fire, and RQ's queues with their workers.",
        ),
        _spec("trigger", "schedules:trigger", "Run ID once, now; its regular fires carry on."),
        _spec(
            "web",
            "webcmd:web",
            "Serve the web dashboard: schedules, their next fires and history, the cluster.",
        ),
        _spec(
            "worker",
            "workercmd:worker",
            "Run an RQ worker that acknowledges rqbeat runs atomically (JSON serializer).",
        ),
    )
}
