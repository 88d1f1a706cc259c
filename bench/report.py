"""RESULTS.md: versions, machine, the exact command, then every scenario's numbers."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.core import DASH, Result
from bench.env import REPO
from devtools.localredis import server_binary


def environment() -> dict[str, str]:
    """Versions and machine facts recorded beside the numbers."""
    server = subprocess.run([server_binary(), "--version"], capture_output=True, text=True, check=False)
    commit = _git("rev-parse", "HEAD") or "?"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if "model name" in line
        ),
        platform.processor() or "?",
    )
    mem_kb = next(
        (line.split()[1] for line in _read("/proc/meminfo").splitlines() if "MemTotal" in line), "0"
    )
    return {
        "python": sys.version.split()[0],
        "redis-server": server.stdout.strip() or "?",
        "rq": _version("rq"),
        "redis-py": _version("redis"),
        "hiredis": _version("hiredis"),
        "croniter": _version("croniter"),
        "rqbeat": _version("rqbeat"),
        "git commit": commit + (" (with uncommitted changes to tracked files)" if dirty else ""),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{int(mem_kb) // 1024:,} MiB",
        "os": platform.platform(),
    }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    # read-only git queries
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def render(
    results: list[Result],
    env: dict[str, str],
    *,
    command: str,
    quick: bool,
    reps: int,
    elapsed_s: float,
    load: tuple[str, str],
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# rqbeat benchmarks",
        "",
        f"Recorded {when} by `{command}` ({'smoke run, small N' if quick else 'full run'}; "
        f"{reps} repetition{'s' if reps > 1 else ''} where affordable; {elapsed_s / 60:.1f} min).",
        "",
        f"Cells are `median [min{DASH}max]` over repetitions. Every scenario runs its own private "
        "redis-server on a free port and real `python -m scheduler run` / worker processes.",
        "",
        f"Load average before / after: {load[0]} / {load[1]} (the machine was shared with other "
        "work while this ran; single numbers are noisy).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in env.items()),
        "",
        "## Targets",
        "",
        "| scenario | metric | target | measured (median) | result |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        for m in res.metrics:
            if m.target is not None:
                lines.append(
                    f"| {res.title} | {m.name} | {m.target.text} {m.unit} | {m.cell()} | {m.verdict()} |"
                )
        if res.error:
            lines.append(f"| {res.title} | {DASH} | {DASH} | error | ERROR |")
    for res in results:
        lines += ["", f"## {res.title}", "", _method(res.method), ""]
        if res.error:
            lines += [f"**Error:** `{res.error}`", ""]
        if res.metrics:
            lines += [
                f"| metric | unit | median [min{DASH}max] | n | target | result |",
                "|---|---|---|---|---|---|",
            ]
            for m in res.metrics:
                target = f"{m.target.text}" if m.target else ""
                lines.append(
                    f"| {m.name} | {m.unit} | {m.cell()} | {len(m.values)} | {target} | {m.verdict()} |"
                )
            lines.append("")
        for note in res.notes:
            lines += [note, ""]
        lines += [f"_{res.elapsed_s:.0f} s_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _method(doc: str) -> str:
    """How the scenario measures: its module docstring."""
    return doc.strip()
