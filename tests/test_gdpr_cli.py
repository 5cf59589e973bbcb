"""`timber-tasks gdpr ...` as an operator runs it: real subprocesses on the embedded default."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from timber_tasks import initialize_timber
from timber_tasks.runtime import Timber

from .conftest import ROOT
from .gdpr_helpers import seed_subject

ADA = "subject-ada"


@pytest.fixture
def seeded(tmp_path: Path) -> Timber:
    timber = initialize_timber(model_config_dirs=[ROOT / "model_configs"])
    seed_subject(timber, ADA)
    return timber


def _gdpr(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "TIMBER_MODEL_CONFIG_DIRS": str(ROOT / "model_configs"),
           "TIMBER_BEAT_SCHEDULE": str(ROOT / "beat_schedule.yaml"), "ARCHIVE_PASS": "open sesame",
           "WRONG_PASS": "not it"}
    return subprocess.run([sys.executable, "-m", "timber_tasks.cli", "gdpr", *args], cwd=cwd, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_export_verify_erase_verify_from_the_command_line(seeded: Timber, tmp_path: Path) -> None:
    out = tmp_path / "ada.zip"
    exported = _gdpr("export", ADA, "--out", str(out), "--operator", "dpo", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "TrackedEvent" in exported.stdout and zipfile.is_zipfile(out)

    refused = _gdpr("export", ADA, "--out", str(out), cwd=tmp_path)
    assert refused.returncode == 1 and "ada.zip exists" in refused.stderr and "--force" in refused.stderr
    assert _gdpr("export", ADA, "--out", str(out), "--force", cwd=tmp_path).returncode == 0

    before = _gdpr("verify", ADA, cwd=tmp_path)
    assert before.returncode == 1 and "database:User" in before.stdout and "residue" in before.stderr

    declined = _gdpr("erase", ADA, cwd=tmp_path, stdin="n\n")
    assert declined.returncode != 0 and "Aborted" in declined.stderr + declined.stdout
    assert _gdpr("verify", ADA, cwd=tmp_path).returncode == 1

    erased = _gdpr("erase", ADA, "--yes", "--operator", "dpo", cwd=tmp_path)
    assert erased.returncode == 0, erased.stderr
    after = _gdpr("verify", ADA, cwd=tmp_path)
    assert after.returncode == 0 and "nothing left" in after.stdout
    log = _gdpr("audit", cwd=tmp_path)
    assert log.stdout.count("dpo") == 2 and log.stdout.count("export") == 2 and log.stdout.count("erase") == 1
    assert ADA not in log.stdout


def test_an_encrypted_export_round_trips_through_decrypt(seeded: Timber, tmp_path: Path) -> None:
    sealed = tmp_path / "ada.zip.enc"
    made = _gdpr("export", ADA, "--out", str(sealed), "--passphrase-env", "ARCHIVE_PASS", cwd=tmp_path)
    assert made.returncode == 0 and "encrypted" in made.stdout, made.stderr
    assert not zipfile.is_zipfile(sealed)
    opened = _gdpr("decrypt", str(sealed), "--out", str(tmp_path / "ada.zip"), "--passphrase-env", "ARCHIVE_PASS",
                   cwd=tmp_path)
    assert opened.returncode == 0, opened.stderr
    with zipfile.ZipFile(tmp_path / "ada.zip") as zf:
        assert "manifest.json" in zf.namelist()
    assert (tmp_path / "ada.zip").stat().st_mode & 0o077 == 0  # a person's data: the owner's only
    again = _gdpr("decrypt", str(sealed), "--out", str(tmp_path / "ada.zip"), "--passphrase-env", "ARCHIVE_PASS",
                  cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr  # the advice names an option decrypt has
    forced = _gdpr("decrypt", str(sealed), "--out", str(tmp_path / "ada.zip"), "--passphrase-env", "ARCHIVE_PASS",
                   "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    wrong = _gdpr("decrypt", str(sealed), "--out", str(tmp_path / "wrong.zip"), "--passphrase-env", "WRONG_PASS",
                  cwd=tmp_path)
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    assert not (tmp_path / "wrong.zip").exists() and not list(tmp_path.glob(".wrong.zip.*"))  # nothing half-written


def test_exporting_an_unknown_user_writes_an_empty_export_and_says_so(seeded: Timber, tmp_path: Path) -> None:
    result = _gdpr("export", "nobody", "--out", str(tmp_path / "n.zip"), cwd=tmp_path)
    assert result.returncode == 0 and "no data of this user" in result.stdout


def test_replay_ledger_from_the_command_line_reports_what_it_erased_again(seeded: Timber, tmp_path: Path) -> None:
    assert _gdpr("erase", ADA, "--yes", cwd=tmp_path).returncode == 0
    result = _gdpr("replay-ledger", "--yes", cwd=tmp_path)
    assert result.returncode == 0 and "0 subject(s) erased again" in result.stdout
