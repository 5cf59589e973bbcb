"""`timber-tasks keys`: make Fernet keys and re-encrypt every encrypted field under the newest one."""

from __future__ import annotations

from typing import Annotated

import typer

from timber_tasks.cli.common import AppName, ConfigDirs, DatabaseUrl, console, reported_errors

app = typer.Typer(no_args_is_help=True, help="Encryption keys: generate and rotate.", rich_markup_mode=None)


@app.command()
def generate() -> None:
    """Print a new Fernet key (put it first in TIMBER_ENCRYPTION_KEYS to make it the newest)."""
    from cryptography.fernet import Fernet  # not features.encryption: no SQLAlchemy for one key

    console.print(Fernet.generate_key().decode(), markup=False, highlight=False)


@app.command()
def rotate(
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = 500,
    database_url: DatabaseUrl = None, dirs: ConfigDirs = None, app_name: AppName = None,
) -> None:
    """Re-encrypt every encrypted field under the first key of TIMBER_ENCRYPTION_KEYS.

    Safe to rerun after an interruption: rows already under the newest key are skipped.
    When it finishes, the old keys can be removed from TIMBER_ENCRYPTION_KEYS.
    """
    from timber_tasks import gdpr
    from timber_tasks.features.encryption import rotate_encryption_keys
    from timber_tasks.jobs import sealing
    from timber_tasks.jobs.tables import system_metadata
    from timber_tasks.runtime import initialize_timber

    with reported_errors():
        timber = initialize_timber(app_name=app_name, model_config_dirs=list(dirs) if dirs else None,
                                   database_url=database_url, create_tables=False, app_role=False)
        report = rotate_encryption_keys(
            timber, batch_size=batch_size,
            progress=lambda model, rows, rotated: console.print(f"  {model}: {rows} rows seen, {rotated} "
                                                                "values re-encrypted"))
        resealed = sealing.reseal_stored(timber.db, system_metadata)  # outbox, dead letters, GDPR ledger
        ledger = gdpr.ledger_key_counts(timber)
        hasher = gdpr.SubjectHasher.of(timber)
    console.print(f"[green]done[/green]: {report.models} model(s), {report.rows_seen} rows, "
                  f"{report.values_rotated} value(s) re-encrypted in {report.batches} batch(es); "
                  f"{resealed} stored job payload(s) re-sealed")
    # A keyed hash cannot be re-keyed without the id it hides: an old key with ledger entries must stay.
    labelled = hasher.labelled_ids()
    keep = [(label, key_id, ledger[key_id]) for label, key_id in hasher.older_fernet_ids() if key_id in ledger]
    for label, key_id, n in keep:
        console.print(f"[yellow]keep {label}[/yellow] (key id {key_id}), as the last of TIMBER_ENCRYPTION_KEYS: "
                      f"{n} erasure ledger {'entry is' if n == 1 else 'entries are'} hashed under it, and "
                      "`timber-tasks gdpr replay-ledger` needs it to find those subjects after a restore")
    known = {key_id for _, key_id in labelled}
    for key_id, n in sorted((k, n) for k, n in ledger.items() if k is not None and k not in known):
        console.print(f"[red]put back the key with id {key_id}[/red]: {n} erasure ledger "
                      f"{'entry is' if n == 1 else 'entries are'} hashed under a key no longer configured "
                      "(`timber-tasks gdpr keys` lists them)")
    if keep and not hasher.uses_subject_key:
        console.print("set TIMBER_GDPR_SUBJECT_KEY (a key never rotated) so later erasures do not tie up a Fernet key")
    if not keep:
        console.print("old keys may now be removed from TIMBER_ENCRYPTION_KEYS")
