"""How long the `timber-tasks` command takes to start, beside `python -c pass` in the same run.

Each figure is the median wall time of fresh interpreters, interleaved round by round so a
busy machine slows every command alike. `--help` and the commands that need no database must
stay well under 0.5 s; `models validate` builds SQLAlchemy models, so `import sqlalchemy.orm`
is its floor and is shown beside it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_CLI_ROUNDS", "7"))
COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass", ["-c", "pass"]),
    ("timber-tasks --help", ["-m", "timber_tasks.cli", "--help"]),
    ("timber-tasks dlq --help", ["-m", "timber_tasks.cli", "dlq", "--help"]),
    ("timber-tasks keys generate", ["-m", "timber_tasks.cli", "keys", "generate"]),
    ("python -c 'import sqlalchemy.orm'", ["-c", "import sqlalchemy.orm"]),
    ("timber-tasks models validate model_configs", ["-m", "timber_tasks.cli", "models", "validate",
                                                    str(ROOT / "model_configs")]),
]


def _run(argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    times: dict[str, list[float]] = {name: [] for name, _ in COMMANDS}
    for _ in range(ROUNDS):
        for name, argv in COMMANDS:
            times[name].append(_run(argv))
    base = statistics.median(times["python -c pass"])
    print(f"\n== command start-up, median of {ROUNDS} interleaved rounds")
    for name, _ in COMMANDS:
        median = statistics.median(times[name])
        print(f"  {name:<48} {median * 1000:8.0f} ms  {median / base:6.1f}x of python -c pass")


if __name__ == "__main__":
    main()
