"""Every Python and shell snippet of README.md runs as written, on the embedded default, twice.

The README is replayed as a reader would in one shell session, in a fresh folder holding the
project's files: `sh` blocks line by line as written, `python` blocks as scripts. Three
substitutions, each because the machine differs from a reader's, not the snippet:
- `make run` uses this test's environment (`VENV=` the running interpreter's, not re-installed);
- the commands that start long-running processes (worker, beat, Flower) run in the background,
  started once the demo has run and the key is exported, before the snippets that need them;
  Flower listens on a free port (FLOWER_PORT) instead of 5555;
- NOT_RUN lines are left out, each for the reason given there.
Python snippets run twice: a second run of the README's code must work too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT
from .platforms import free_port

NOT_RUN = {
    "make test": "it runs the whole suite, this test included",
    "docker compose": "no Docker engine on these machines: tests/test_compose.py runs each service's command",
    "cp .env.example .env": "belongs to the docker compose deployment above",
}
# Long-running commands: (how the line starts, what its log says once it is ready).
BACKGROUND = [("timber-tasks worker", " ready."), ("timber-tasks beat", "beat: Starting"),
              ("FLOWER_BASIC_AUTH=", "Visit me at")]
PROJECT_FILES = ["Makefile", "pyproject.toml", "model_configs", "workers", "beat_schedule.yaml", ".env.example"]
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer((ROOT / "README.md").read_text())]


def _skipped(line: str) -> bool:
    return any(line.strip().startswith(prefix) for prefix in NOT_RUN)


def _background(line: str) -> str | None:
    stripped = line.strip()
    return next((ready for prefix, ready in BACKGROUND if stripped.startswith(prefix)), None)


def session_script(blocks: list[tuple[str, str]], venv: Path) -> str:
    """One bash session replaying the README; each snippet announces itself, so a failure names it."""
    # `|| true`: a command failing in the EXIT trap would become the session's exit code
    lines = ["set -euo pipefail", "pids=()", "trap 'kill -TERM ${pids[@]:-} 2>/dev/null || true; wait' EXIT",
             "ready() { for _ in $(seq 1 900); do grep -q \"$2\" \"$1\" && return 0; sleep 0.1; done; "
             "echo \"not ready: $1\" >&2; cat \"$1\" >&2; return 1; }"]
    started: list[str] = []
    body: list[str] = []
    for number, (kind, text) in enumerate(blocks):
        label = f"README snippet {number + 1} ({kind}): {text.strip().splitlines()[0][:60]}"
        body.append(f"echo {shlex.quote('=== ' + label)} >&2")
        if kind == "python":
            for run in (1, 2):
                body.append(f"echo {shlex.quote(f'--- run {run}')} >&2")
                body.append(f"{venv}/bin/python - <<'TIMBER_README_PY'\n{text}TIMBER_README_PY")
            continue
        for line in text.splitlines():
            if not line.strip() or _skipped(line):
                continue
            ready = _background(line)
            if ready is not None:
                log = f"bg-{len(started)}.log"
                command = line.split(" #")[0].strip()  # its comment would swallow the redirection
                started.append(f"echo {shlex.quote('$ ' + command + ' &')} >&2\n{command} > {log} 2>&1 &\n"
                               f"pids+=($!)\nready {log} {shlex.quote(ready)}")
                continue
            if line.strip().startswith("make run"):
                line = line.replace("make run", f"make -o {venv}/.installed run VENV={venv}", 1)
            body.append(f"echo {shlex.quote('$ ' + line.strip())} >&2")
            body.append(line)
        if number == 1:  # after `make run` and the key: start the processes the rest needs
            body.append("__BACKGROUND__")
    # A reader goes back to the main command after trying the rest: it must still work (the app
    # snippet once took the demo user's name, and every later demo failed).
    body += ["echo '=== make run again, after every snippet, with the processes above stopped' >&2",
             "kill -TERM ${pids[@]:-} 2>/dev/null || true; wait || true; pids=()",
             f"make -o {venv}/.installed run VENV={venv}"]
    script = "\n".join(lines + body)
    return script.replace("__BACKGROUND__", "\n".join(started) or ":")


def test_the_readme_has_the_snippets_this_test_replays() -> None:
    blocks = readme_blocks()
    assert [kind for kind, _ in blocks].count("python") >= 3
    text = "\n".join(body for _, body in blocks)
    assert "make run" in text and "export TIMBER_ENCRYPTION_KEYS" in blocks[1][1]
    for prefix, _ in BACKGROUND:
        assert prefix in text, f"{prefix!r} is no longer in the README: update BACKGROUND"


@pytest.mark.timeout(600)
def test_every_readme_snippet_runs_as_written_on_the_embedded_default_twice(tmp_path: Path) -> None:
    for name in PROJECT_FILES:
        (tmp_path / name).symlink_to(ROOT / name)
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TIMBER_", "FLOWER_")) and k not in
           {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND_URL", "REDIS_URL", "QDRANT_URL"}}
    env.update(PYTHONPATH=str(ROOT), PATH=f"{venv}/bin{os.pathsep}{env.get('PATH', '')}",
               FLOWER_PORT=str(free_port()), COLUMNS="200")
    script = session_script(readme_blocks(), venv)
    (tmp_path / "readme-session.sh").write_text(script)
    proc = subprocess.Popen(["bash", str(tmp_path / "readme-session.sh")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=540)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever the session left behind
            os.killpg(proc.pid, signal.SIGKILL)
    failed_at = [line for line in err.splitlines() if line.startswith(("===", "---", "$ "))][-3:]
    assert proc.returncode == 0, f"failed at {failed_at}:\n{err[-4000:]}\n{out[-2000:]}"
    assert "dead letter" in out and "the database matches the YAML models" in out
    assert "pong" in out  # celery inspect ping reached the README's workers
