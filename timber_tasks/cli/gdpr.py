"""`timber-tasks gdpr export | erase | verify | replay-ledger | decrypt | keygen | audit`, and the demo's step."""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from timber_tasks.cli.common import console, err_console, reported_errors

app = typer.Typer(no_args_is_help=True,
                  help="GDPR: export (Art. 15/20) and erase (Art. 17) a user's data in every store.")

UserId = Annotated[str, typer.Argument(help="The user's id, as the models' user_id_field stores it.")]
Operator = Annotated[str | None, typer.Option("--operator", help="Who asks (for the audit log); default: login name.")]
ViaWorker = Annotated[bool, typer.Option("--via-worker", help="Enqueue on the gdpr queue and follow the job.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the worker (--via-worker).")]
PassphraseEnv = Annotated[str | None, typer.Option(
    "--passphrase-env", help="Encrypt (or decrypt) with the passphrase in this environment variable.")]
AskPassphrase = Annotated[bool, typer.Option("--passphrase", help="Encrypt (or decrypt) with a passphrase, asked for.")]
KeyFile = Annotated[Path | None, typer.Option("--key-file", help="Encrypt (or decrypt) with the key in this file "
                                              "(`timber-tasks gdpr keygen`).")]


def _operator(given: str | None) -> str:
    return given or f"cli:{getpass.getuser()}"


def _archive_key(passphrase_env: str | None, ask: bool, key_file: Path | None, *, confirm: bool) -> Any:
    from timber_tasks.gdpr import ArchiveKey, GdprError

    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if not value:
            raise GdprError(f"--passphrase-env {passphrase_env}: that environment variable is empty or not set")
        return ArchiveKey(passphrase=value)
    if ask:
        return ArchiveKey(passphrase=typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm))
    if key_file is not None:
        return ArchiveKey(key=key_file.read_text())
    return None


@app.command("export")
def export(user_id: UserId, out: Annotated[Path, typer.Option("--out", help="The ZIP to write.")],
           force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
           via_worker: ViaWorker = False, timeout: Timeout = 600, passphrase_env: PassphraseEnv = None,
           passphrase: AskPassphrase = False, key_file: KeyFile = None, operator: Operator = None) -> None:
    """Write every store's data of the user to one ZIP (JSON Lines + CSV per model, manifest.json)."""
    from timber_tasks.gdpr import OutputExistsError, export_subject
    from timber_tasks.runtime import initialize_timber

    with reported_errors():
        if out.exists() and not force:
            raise OutputExistsError(str(out))
        key = _archive_key(passphrase_env, passphrase, key_file, confirm=True)
        timber = initialize_timber()
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("exporting", total=None)

            def progress(part: str, done: int, total: int) -> None:
                bar.update(task, description=f"exporting {part}", completed=done, total=total or None)

            if via_worker:
                counts = _export_via_worker(user_id, out, force, key, _operator(operator), timeout, progress)
            else:
                counts = export_subject(timber, user_id, out, force=force, archive_key=key,
                                        actor=_operator(operator), progress=progress).counts
    _show_counts(counts, "rows")
    total = sum(counts.values())
    console.print(f"wrote {out} ({total} row(s){', encrypted' if key else ''})" if total else
                  f"wrote {out}: no data of this user in the GDPR models or vectors (the manifest says so; "
                  "`timber-tasks gdpr verify` lists copies left in job stores)")


def _export_via_worker(user_id: str, out: Path, force: bool, key: Any, operator: str, timeout: float,
                       progress: Callable[[str, int, int], None]) -> dict[str, int]:
    from timber_tasks.celery_app import app as celery_app
    from timber_tasks.gdpr import GdprError

    job = celery_app.tasks["timber.gdpr.export"].delay(
        user_id, str(out.resolve()), force, operator,
        archive_key=None if key is None or key.raw is None else key.raw_text, passphrase=None if key is None
        else key.passphrase)
    deadline = time.monotonic() + timeout
    while not job.ready():
        if time.monotonic() > deadline:
            raise GdprError(f"export job {job.id} did not finish within {timeout:.0f}s: is a worker consuming "
                            "the gdpr queue (`timber-tasks worker --pool gdpr`)?")
        info = job.info if job.state == "PROGRESS" else None
        if isinstance(info, dict):
            progress(str(info.get("part")), int(info.get("done", 0)), int(info.get("total", 0)))
        time.sleep(0.2)
    result: dict[str, Any] = job.get(timeout=10)
    if not out.exists():
        raise GdprError(f"export job {job.id} finished but {out} is not there: the worker wrote it on its own "
                        "host; give --out a path both share")
    return dict(result["counts"])


@app.command("erase")
def erase(user_id: UserId, yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
          via_worker: ViaWorker = False, timeout: Timeout = 600, operator: Operator = None) -> None:
    """Erase the user from every store (database in one transaction, then caches, jobs, results)."""
    from timber_tasks.gdpr import GdprError, request_erasure, run_erasure
    from timber_tasks.runtime import initialize_timber

    if not yes:
        typer.confirm(f"Erase every piece of data of user {user_id!r} in every store? This cannot be undone",
                      abort=True)
    with reported_errors():
        timber = initialize_timber()
        request_id = request_erasure(timber, user_id, requested_by=_operator(operator))
        if via_worker:
            from timber_tasks.celery_app import app as celery_app

            job = celery_app.tasks["timber.gdpr.erase"].delay(request_id)
            try:
                counts = job.get(timeout=timeout)["counts"]
            except TimeoutError:
                raise GdprError(f"erasure job {job.id} did not finish within {timeout:.0f}s; it stays requested "
                                "and completes when a gdpr worker runs it (or `timber-tasks gdpr replay-ledger`)"
                                ) from None
        else:
            counts = run_erasure(timber, request_id).counts
    _show_counts(counts, "items erased")
    console.print(f"erased user {user_id!r}: ledger entry {request_id}; `timber-tasks gdpr verify` checks")


@app.command("verify")
def verify(user_id: UserId) -> None:
    """Scan every store for the user's data; exit 1 when any is left."""
    from timber_tasks.gdpr import verify_subject
    from timber_tasks.runtime import initialize_timber

    with reported_errors():
        residue = verify_subject(initialize_timber(), user_id)
    if residue.clean:
        console.print(f"[green]nothing left[/green] of user {user_id!r} in any store")
        return
    _show_counts(residue.found, "items holding the user's data")
    err_console.print(f"[red]residue:[/red] {sum(residue.found.values())} item(s) still hold data of {user_id!r}")
    raise typer.Exit(1)


@app.command("replay-ledger")
def replay(yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
           operator: Operator = None) -> None:
    """After a database restore: erase again everyone the ledger says was erased, finish interrupted erasures."""
    from timber_tasks.gdpr import replay_ledger
    from timber_tasks.runtime import initialize_timber

    if not yes:
        typer.confirm("Erase again every subject in the erasure ledger found in the data?", abort=True)
    with reported_errors():
        reports = replay_ledger(initialize_timber(), requested_by=_operator(operator))
    for report in reports:
        console.print(f"erased again: subject {report.subject_hash[:16]}... ({sum(report.counts.values())} item(s))")
    console.print(f"{len(reports)} subject(s) erased again")


@app.command("decrypt")
def decrypt(archive: Annotated[Path, typer.Argument(help="An encrypted export.")],
            out: Annotated[Path, typer.Option("--out", help="The ZIP to write.")],
            passphrase_env: PassphraseEnv = None, passphrase: AskPassphrase = False, key_file: KeyFile = None,
            force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False) -> None:
    """Turn an encrypted export back into its ZIP (readable by its owner only)."""
    from timber_tasks.gdpr import GdprError, OutputExistsError, decrypt_archive

    with reported_errors():
        if out.exists() and not force:
            raise OutputExistsError(str(out))
        key = _archive_key(passphrase_env, passphrase, key_file, confirm=False)
        if key is None:
            raise GdprError("give --passphrase, --passphrase-env VAR or --key-file FILE")
        decrypt_archive(archive, out, key)
    console.print(f"wrote {out}")


@app.command("keys")
def keys() -> None:
    """The keys subject hashes are made under (ids only) and the erasure ledger entries under each."""
    from timber_tasks.gdpr import SubjectHasher, ledger_key_counts
    from timber_tasks.runtime import initialize_timber

    with reported_errors():
        timber = initialize_timber(create_tables=False)
        hasher, ledger = SubjectHasher.of(timber), ledger_key_counts(timber)
    table = Table("key", "id", "ledger entries")
    labelled = hasher.labelled_ids()
    for n, (label, key_id) in enumerate(labelled):
        table.add_row(label + (" (writes)" if n == 0 else ""), key_id, str(ledger.get(key_id, 0)))
    known = {key_id for _, key_id in labelled}
    for key_id, count in sorted((str(k), n) for k, n in ledger.items() if k not in known):
        table.add_row("[red]not configured[/red]" if key_id != "None" else "(written before ids were kept)",
                      key_id if key_id != "None" else "-", str(count))
    console.print(table)


@app.command("keygen")
def keygen() -> None:
    """A new random key for encrypting exports (--key-file)."""
    from timber_tasks.gdpr import new_key

    typer.echo(new_key())


@app.command("audit")
def audit_log(limit: Annotated[int, typer.Option(help="Newest entries to show.")] = 50) -> None:
    """The audit log of exports and erasures: who, when, counts (subjects as keyed hashes)."""
    from timber_tasks.gdpr import audit
    from timber_tasks.runtime import initialize_timber

    with reported_errors():
        rows = audit.entries(initialize_timber())[-limit:]
    table = Table("when (UTC)", "action", "who", "app", "subject (keyed hash)", "counts")
    for e in rows:
        counts = e.counts.get("rows", e.counts) if isinstance(e.counts, dict) else e.counts
        table.add_row(e.at.isoformat(" ", "seconds"), e.action, e.actor, e.app_name, e.subject_hash[:16] + "...",
                      ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    console.print(table)


def _show_counts(counts: dict[str, int], what: str) -> None:
    table = Table("where", what)
    for name, n in counts.items():
        table.add_row(name, str(n))
    console.print(table)


# -- the demo's step ------------------------------------------------------------------------

DEMO_USER = "demo-user"


def demo_step(celery_app: Any, timber: Any, wait_until: Callable[[Callable[[], Any], str], Any]) -> None:
    """Export the sample user through the gdpr queue, erase them there, and verify nothing is left."""
    from timber_tasks.gdpr import verify_subject

    out = (Path(timber.settings.data_dir) / "gdpr" / f"{DEMO_USER}-export.zip").resolve()
    console.print(f"[bold]GDPR[/bold] (user {DEMO_USER!r}, jobs on the gdpr queue):")
    job = celery_app.tasks["timber.gdpr.export"].delay(DEMO_USER, str(out), True, "demo")
    wait_until(job.ready, "the GDPR export job")
    exported = _outcome(job, "export")
    console.print(f"exported {sum(exported['counts'].values())} row(s) to {out} "
                  f"({', '.join(f'{k} {v}' for k, v in exported['counts'].items() if v)})")
    from timber_tasks.tasks.gdpr import erase_user

    erasure = erase_user(DEMO_USER, requested_by="demo")
    wait_until(erasure.ready, "the GDPR erasure job")
    erased = _outcome(erasure, "erasure")["counts"]
    console.print(f"erased: {', '.join(f'{k} {v}' for k, v in erased.items())}")
    residue = verify_subject(timber, DEMO_USER)
    if not residue.clean:
        err_console.print(f"[red]error:[/red] after the erasure, data of {DEMO_USER!r} is left in {residue.found}")
        raise typer.Exit(1)
    console.print(f"verify: [green]nothing left[/green] of {DEMO_USER!r} in any store")


def _outcome(job: Any, what: str) -> Any:
    try:
        return job.get(timeout=10)
    except Exception as exc:  # said plainly, and the demo fails: it must end with nothing left
        err_console.print(f"[red]error:[/red] the GDPR {what} job {job.id} failed: {exc}", highlight=False)
        raise typer.Exit(1) from exc
