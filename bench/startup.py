"""Start-up of ``rqbeat --help`` and ``rqbeat ls`` (an empty private Redis) for two
checkouts, each with its own ``.venv``:
``python -m bench.startup BEFORE_DIR AFTER_DIR [RUNS]``.

Per checkout and command: the wall time of the whole command and the imports' time
(``python -X importtime``, the sum of the top-level cumulative times), medians of RUNS
(default 10), the checkouts alternating, after one warm-up round (.pyc, page cache).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devtools.processes import RedisServer

TREES = {"before": sys.argv[1], "after": sys.argv[2]} if len(sys.argv) > 2 else {}
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 10


def import_ms(stderr: str) -> float:
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name[1:].startswith(" "):  # top level: no nesting indent
            total += int(cumulative)
    return total / 1000


def main() -> None:
    if not TREES:
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            commands = {"--help": ["--help"], "ls": ["-u", server.url, "ls"]}
            wall: dict[tuple[str, str], list[float]] = {}
            imports: dict[tuple[str, str], list[float]] = {}
            for run in range(RUNS + 1):  # the first is a warm-up (.pyc, page cache): not counted
                for label, tree in TREES.items():
                    exe = f"{tree}/.venv/bin/rqbeat"
                    py = f"{tree}/.venv/bin/python"
                    for cname, args in commands.items():
                        t0 = time.perf_counter()
                        subprocess.run([exe, *args], cwd=tmp, capture_output=True, check=True)
                        elapsed = time.perf_counter() - t0
                        done = subprocess.run(
                            [py, "-X", "importtime", "-m", "scheduler", *args],
                            cwd=tmp,
                            capture_output=True,
                            text=True,
                            check=True,
                        )
                        if run:
                            wall.setdefault((label, cname), []).append(elapsed)
                            imports.setdefault((label, cname), []).append(import_ms(done.stderr))
            print(
                f"| command | checkout | wall, median of {RUNS} | imports (-X importtime), median of {RUNS} |"
            )
            print("|---|---|---:|---:|")
            for cname in commands:
                for label, tree in TREES.items():
                    w = statistics.median(wall[(label, cname)]) * 1000
                    i = statistics.median(imports[(label, cname)])
                    print(f"| `rqbeat {cname}` | {label}: {tree} | {w:.0f} ms | {i:.0f} ms |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
