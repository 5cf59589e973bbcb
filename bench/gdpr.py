"""GDPR export and erasure of one user with 10,000 rows among 1,000,000, beside a user with 100, same run.

PostgreSQL; data loaded with COPY. Each figure is measured in a fresh subprocess (as the CLI
runs it): wall time of the export or erasure alone, its peak RSS growth over the process's
peak before it, and (in a second run) the Python heap peak under tracemalloc. The floor is a
plain SELECT of the same rows in the same process kind. Peak RSS growth is the kernel's peak
mark (reset just before the action) minus the resident size before it. Aim: export < 1 s, peak memory
within 50 MB, for both users.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import report, scratch_postgres

TOTAL_ROWS = int(os.environ.get("BENCH_GDPR_TOTAL_ROWS", "1000000"))
BIG, SMALL = int(os.environ.get("BENCH_GDPR_BIG_ROWS", "10000")), 100
REPEATS = int(os.environ.get("BENCH_GDPR_REPEATS", "3"))  # users of each size: one erasure each
OTHER_USERS = 5_000
ROOT = Path(__file__).resolve().parent.parent


def _env(url: str, data_dir: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {**os.environ, "DATABASE_URL": url, "TIMBER_DATA_DIR": str(data_dir),
            "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"), "PYTHONPATH": str(ROOT),
            "TIMBER_ENCRYPTION_KEYS": os.environ.get("TIMBER_ENCRYPTION_KEYS") or Fernet.generate_key().decode()}


def _copy(cursor: Any, table: str, columns: str, lines: Any) -> None:
    buffer = io.StringIO()
    for n, line in enumerate(lines, 1):
        buffer.write(line)
        if n % 200_000 == 0:
            buffer.seek(0)
            cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
            buffer = io.StringIO()
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)


def build(env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Users, and TrackedEvent rows: BIG each for the big users, SMALL each for the small ones, the rest spread."""
    os.environ.update(env)
    from timber_tasks import initialize_timber

    timber = initialize_timber()
    big = [f"big-{i}" for i in range(REPEATS)]
    small = [f"small-{i}" for i in range(REPEATS)]
    others = [f"other-{i}" for i in range(OTHER_USERS)]
    users = [*big, *small, *others]
    owners = [u for u in big for _ in range(BIG)] + [u for u in small for _ in range(SMALL)]
    rest = TOTAL_ROWS - len(owners)
    raw = timber.db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        _copy(cursor, "users", "id, email, username, is_active, created_at",
              (f"{u},{u}@example.com,{u.replace('-', '_')},t,2024-01-01\n" for u in users))
        events = (f"{n},{owner},grove,login,\"{{\"\"ip\"\": \"\"10.0.{n % 256}.1\"\"}}\",2024-01-01T00:00:00\n"
                  for n, owner in enumerate([*owners, *(others[i % OTHER_USERS] for i in range(rest))]))
        _copy(cursor, "tracked_events", "id, user_id, app_name, event_type, properties, occurred_at", events)
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    timber.close()
    return big, small


# -- the measured part, in a child process --------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the lifetime peak


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux: clear_refs 5), so VmHWM afterwards is this action's peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def child(action: str, user: str, out_dir: str, traced: bool) -> None:
    import tracemalloc

    from timber_tasks import gdpr, initialize_timber

    timber = initialize_timber(create_tables=False)
    # Warm-up as a long-lived worker is: connections open, statements compiled (an unknown user: no effect).
    if action == "export":
        gdpr.export_subject(timber, "warm-up", Path(out_dir) / "warm-up.zip", force=True, actor="bench")
    elif action == "erase":
        gdpr.erase_subject(timber, "warm-up", requested_by="bench")
    Event = timber.get_model("TrackedEvent")
    from sqlalchemy import select

    def plain_select(who: str) -> int:
        with timber.db.session_scope() as session:
            return len(session.execute(select(Event.__table__).where(Event.user_id == who)).all())

    plain_select("warm-up")
    rss_before = _reset_peak_rss()
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    if action == "export":
        gdpr.export_subject(timber, user, Path(out_dir) / f"{user}.zip", force=True, actor="bench")
    elif action == "erase":
        gdpr.erase_subject(timber, user, requested_by="bench")
    else:
        assert plain_select(user)
    seconds = time.perf_counter() - started
    heap = tracemalloc.get_traced_memory()[1] if traced else 0
    grown = _status_kib("VmHWM") - rss_before  # peak during the action over the resident size before it
    print(json.dumps({"seconds": seconds, "rss_mb": grown / 1024, "heap_mb": heap / 2**20}))


def _measure(env: dict[str, str], action: str, user: str, out_dir: Path, traced: bool = False) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "bench.gdpr", "--child", action, user, str(out_dir),
                           "1" if traced else "0"], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    with scratch_postgres() as url, tempfile.TemporaryDirectory() as tmp:
        env = _env(url, Path(tmp) / "var")
        started = time.perf_counter()
        big, small = build(env)
        print(f"\nbuilt {TOTAL_ROWS:,} TrackedEvent rows ({BIG:,} per big user, {SMALL} per small user) "
              f"in {time.perf_counter() - started:.1f}s (COPY)")
        out = Path(tmp) / "exports"
        out.mkdir()
        figures: dict[str, list[dict[str, float]]] = {}
        for label, users in (("big", big), ("small", small)):
            for action in ("select", "export"):
                runs = [_measure(env, action, users[0], out) for _ in range(REPEATS)]
                runs[0]["heap_mb"] = _measure(env, action, users[0], out, traced=True)["heap_mb"]
                figures[f"{action} {label}"] = runs
            erasures = [_measure(env, "erase", u, out, traced=(n == 0)) for n, u in enumerate(users)]
            erasures[0]["seconds"] = statistics.median(r["seconds"] for r in erasures[1:]) if len(users) > 1 \
                else erasures[0]["seconds"]  # the traced run is slower: its time is not a figure
            figures[f"erase {label}"] = erasures
        size = {"big": BIG, "small": SMALL}

        def median(key: str, field: str) -> float:
            return statistics.median(r[field] for r in figures[key])

        for label in ("big", "small"):
            rows = [(f"{a} {size[label]:,}-row user ({TOTAL_ROWS:,} rows in all)", median(f"{a} {label}", "seconds")
                     * 1000, "ms") for a in ("select", "export", "erase")]
            report(f"GDPR, user with {size[label]:,} rows: median wall time of {REPEATS}", rows,
                   rows[0][0])
        print("\n== GDPR peak memory (aim: within 50 MB for both users); RSS: peak growth during the action")
        for a in ("select", "export", "erase"):
            cells = []
            for label in ("big", "small"):
                heap = figures[f"{a} {label}"][0].get("heap_mb", 0.0)
                cells.append(f"{size[label]:>6,}-row user: RSS +{median(f'{a} {label}', 'rss_mb'):6.1f} MB, "
                             f"Python heap peak {heap:6.1f} MB")
            print(f"  {a:<7} " + " | ".join(cells))
        ratio = median("export big", "seconds") / median("export small", "seconds")
        print(f"  export: {BIG:,}-row user / {SMALL}-row user time = {ratio:.2f}x "
              f"(aim < 1 s: {median('export big', 'seconds'):.3f} s)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1")
    else:
        main()
