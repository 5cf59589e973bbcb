"""`timber-tasks demo` watches its worker: a dead worker is said at once, with its log, and fails the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .platforms import wait_for
from .test_cli import SHIPPED


def child_pid(parent: int, word: str) -> int | None:
    """The pid of a child of `parent` whose command line holds `word` (read from /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and word.encode() in cmdline:
            return int(entry)
    return None


def test_the_demo_exits_non_zero_at_once_saying_its_worker_died_with_the_log_s_last_lines(tmp_path: Path) -> None:
    env = {**os.environ, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED, "TIMBER_DATA_DIR": str(tmp_path / "var"),
           "COLUMNS": "200"}
    demo = subprocess.Popen([sys.executable, "-m", "timber_tasks.cli", "demo"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        worker = wait_for(lambda: child_pid(demo.pid, "worker") or demo.poll() is not None, 120, "the demo's worker")
        assert demo.poll() is None, demo.communicate()
        log = tmp_path / "var" / "demo-worker.log"
        wait_for(lambda: log.exists() and log.stat().st_size > 0, 120, "the worker's first log line")
        os.kill(worker, signal.SIGKILL)
        _, stderr = demo.communicate(timeout=60)  # at once: not after a 300 s budget or a per-job timeout
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 1
    assert "the worker exited (code -9)" in stderr, stderr
    assert f"Last lines of {log}" in stderr and log.read_text().splitlines()[-1] in stderr
    assert "Traceback" not in stderr
