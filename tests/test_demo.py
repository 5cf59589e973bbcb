"""`timber-tasks demo` watches its worker: a dead worker is said at once, with its log, and fails the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from timber_tasks.cli.watch import WatchedWorker

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


def start_demo(tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TIMBER_MODEL_CONFIG_DIRS": SHIPPED, "TIMBER_DATA_DIR": str(tmp_path / "var"),
           "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "timber_tasks.cli", "demo"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_demo_exits_non_zero_at_once_saying_its_worker_died_with_the_log_s_last_lines(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
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


def test_a_demo_step_that_fails_names_the_step_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from timber_tasks.cli import demo

    log = tmp_path / "worker.log"
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(30)
    watched = WatchedWorker(process, log, budget=60)
    with pytest.raises(typer.Exit) as caught, demo._step("the market-data jobs", watched):
        raise RuntimeError("chord failed: 3 batches\nmore detail")
    assert caught.value.exit_code == 1
    err = capsys.readouterr().err
    assert "the demo failed in the market-data jobs: RuntimeError: chord failed: 3 batches" in err
    assert "more detail" not in err and str(log) in err.replace("\n", "")


def test_a_process_that_ignores_sigterm_is_killed_and_the_demo_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from timber_tasks.cli import demo

    ignores = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "print('ready', flush=True); time.sleep(300)")
    stubborn = subprocess.Popen([sys.executable, "-c", ignores], stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline().strip() == b"ready"
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    with pytest.raises(typer.Exit) as caught:
        demo._stop([polite, stubborn], grace=1)
    stubborn.stdout.close()
    assert caught.value.exit_code == 1 and stubborn.poll() == -signal.SIGKILL and polite.poll() == -signal.SIGTERM
    assert "beat did not stop within 1 s of SIGTERM and was killed" in capsys.readouterr().err.replace("\n", " ")


def test_a_terminated_demo_stops_its_worker_and_beat(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
    try:
        children = wait_for(lambda: (child_pid(demo.pid, "worker"), child_pid(demo.pid, "beat"))
                            if all((child_pid(demo.pid, "worker"), child_pid(demo.pid, "beat"))) else None,
                            120, "the demo's worker and beat")
        demo.send_signal(signal.SIGTERM)
        _, stderr = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode != 0 and "the demo was terminated" in stderr, stderr
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], pid
