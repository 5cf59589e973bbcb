"""The feature services' jobs on real workers: key rotation and cache warming, and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from timber_tasks import runtime
from timber_tasks.features.encryption import KeyRing, generate_key
from timber_tasks.jobs import sealing

from .conftest import ROOT
from .platforms import Platform


def test_the_rotation_job_re_encrypts_so_the_old_key_can_be_dropped(platform: Platform) -> None:
    old_key = os.environ["TIMBER_ENCRYPTION_KEYS"]
    platform.start_worker(queues="persistence")  # the rotation job must reach the worker with both keys
    persist = platform.task("timber.persistence.persist")
    persist.delay("User", "create", {"id": "u1", "email": "u@e.co", "username": "uuu"}).get(timeout=30)
    persist.delay("StockResearchSession", "create", {
        "id": "r1", "user_id": "u1", "symbol": "AAPL", "analysis_type": "dcf",
        "proprietary_analysis": {"fair_value": 210}}).get(timeout=30)

    new_key = generate_key()
    # The rotation procedure: the new key first on every process, this client too (it opens the results).
    sealing.use_keyring(KeyRing([new_key, old_key]))
    rotating = platform.start_worker(queues="maintenance", extra_env={"TIMBER_ENCRYPTION_KEYS": f"{new_key},{old_key}"})
    report = platform.task("timber.maintenance.rotate_encryption_keys").delay(batch_size=1).get(timeout=60)
    assert report["values_rotated"] >= 1 and report["models"] >= 1
    platform.stop(rotating)

    timber = runtime.initialize_timber(encryption_keys=new_key)  # the old key is gone
    Research = timber.get_model("StockResearchSession")
    with timber.db.session_scope() as session:
        assert session.get(Research, "r1").proprietary_analysis == {"fair_value": 210}
        raw = session.execute(text("SELECT proprietary_analysis FROM stock_research_sessions")).scalar()
    assert "fair_value" not in str(raw)


def test_the_warming_job_loads_the_named_keys_on_a_worker(platform: Platform) -> None:
    platform.start_worker()
    persist = platform.task("timber.persistence.persist")
    persist.delay("User", "upsert", [{"id": f"u{n}", "email": f"u{n}@e.co", "username": f"user{n}"}
                                     for n in range(3)]).get(timeout=30)
    warmed = platform.task("timber.cache.warm").delay("User", ["u0", "u2", "missing"]).get(timeout=30)
    assert warmed == {"User": 2}
    everything = platform.task("timber.cache.warm").delay().get(timeout=30)
    assert "User" in everything and "Session" in everything


def test_the_readme_run_command_runs_jobs_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TIMBER_ENCRYPTION_KEYS"}  # a fresh machine has none
    env.update(TIMBER_DATA_DIR=str(tmp_path / "var"), PYTHONPATH=str(ROOT), COLUMNS="200")
    for run in range(2):  # the second run writes the sample rows again: the first run's GDPR step erased them
        result = subprocess.run([sys.executable, "-m", "timber_tasks.cli", "demo"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "DEVELOPMENT key" in result.stderr
        assert "demo-user" in result.stdout and "OhlcvPrice.upsert" in result.stdout
        assert "not-an-email" in result.stdout and "failed" in result.stdout
        # 5 bars from the persistence job, 118 SAMPLE bars (4 files x 30 days, 2 rows refused) from market data
        # demo-user and the sample notes' author (demo-analyst)
        assert "'User': 2, 'Session': 2, 'OhlcvPrice': 123, 'Notification': 1" in result.stdout, (run, result.stdout)
        assert "SAMPLE DATA" in result.stdout and "SMPL-BAD" in result.stdout and "partial" in result.stdout
        assert "worker and beat stopped" in result.stdout
        # The worker embedded the sample notes; the search ranks the chip note above the oil one.
        search = result.stdout[result.stdout.index("who makes chips for phones?"):]
        assert search.index("demo-note-chips") < search.index("demo-note-oil"), result.stdout
    # Beat's command line names its schedule file in the data dir: no process of this demo is left.
    survivors = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert survivors.stdout == ""
