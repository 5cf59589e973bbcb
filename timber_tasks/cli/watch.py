"""A command that waits on its own worker: it notices at once when the worker dies or time runs out."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from timber_tasks.cli.common import err_console

TAIL_LINES = 20


def tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a log file ('' when there is none yet)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


@dataclass
class WatchedWorker:
    """A worker process, its log, and the time the whole command may take."""

    process: subprocess.Popen[bytes]
    log: Path
    budget: float
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.budget

    def check(self, waiting_for: str) -> None:
        """Exit 1 with a clear message if the worker has exited or the time budget is spent."""
        if self.process.poll() is not None:
            err_console.print(f"[red]error:[/red] the worker exited (code {self.process.returncode}) while "
                              f"waiting for {waiting_for}. Last lines of {self.log}:", highlight=False)
            err_console.print(tail(self.log), markup=False, highlight=False)
            raise typer.Exit(1)
        if time.monotonic() > self.deadline:
            err_console.print(f"[red]error:[/red] ran out of the {self.budget:.0f} s time budget while waiting for "
                              f"{waiting_for}; see {self.log} (raise it with --budget)", highlight=False)
            raise typer.Exit(1)

    def wait_until(self, condition: Callable[[], Any], waiting_for: str, interval: float = 0.2) -> Any:
        """Poll `condition` until it is truthy, checking the worker between polls."""
        while True:
            value = condition()
            if value:
                return value
            self.check(waiting_for)
            time.sleep(interval)
