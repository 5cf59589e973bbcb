"""`timber-tasks vectors reindex | search | status`, and the demo's embedding step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from timber_tasks.cli.common import AppName, console, err_console, reported_errors

app = typer.Typer(no_args_is_help=True, help="Vector search: rebuild a model's collection, search it.")


def _filters(values: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not field=value (e.g. --filter symbol=AAPL)")
        found.setdefault(key.strip(), []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in found.items()}


def _collection(timber: Any, model: str) -> str:
    from timber_tasks.embeddings.indexing import vector_model

    return vector_model(timber, model).collection


@app.command("reindex")
def reindex(model: Annotated[str, typer.Argument(help="A model with vector_search, e.g. StockResearchSession.")],
            drop: Annotated[bool, typer.Option("--drop", help="Drop the collection first (a new model).")] = False
            ) -> None:
    """Rebuild a model's collection from the database in batches; vectors of rows no longer there are removed."""
    from timber_tasks.embeddings.indexing import Indexer
    from timber_tasks.runtime import initialize_timber
    from timber_tasks.stores.vectors import vector_store

    with reported_errors():
        timber = initialize_timber()
        if drop:
            vector_store(timber.settings).drop_collection(_collection(timber, model))
        index = Indexer(timber, model)
        columns = (TextColumn("embedding {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err_console, transient=True) as progress:
            bar = progress.add_task(model, total=None)
            result = index.sync(lambda done, total: progress.update(bar, completed=done, total=total))
    show_result(result)


def show_result(result: dict[str, Any]) -> None:
    console.print(f"[bold]{result['model']}[/bold] -> collection {result['collection']}: {result['embedded']} "
                  f"embedded, {result['unchanged']} unchanged, {result['payload_only']} payload-only, "
                  f"{result['removed']} removed", highlight=False)
    for key, why in (("empty", "empty content, no vector"), ("truncated", "longer than the model reads, truncated")):
        if result[key]:
            shown = ", ".join(map(str, result[key][:10])) + (" ..." if len(result[key]) > 10 else "")
            console.print(f"  {len(result[key])} {why}: {shown}", highlight=False)


@app.command("search")
def search(model: Annotated[str, typer.Argument(help="A model with vector_search.")],
           text: Annotated[str, typer.Argument(help="What to look for, in words.")],
           filter_: Annotated[list[str] | None, typer.Option("--filter", help="field=value (repeatable).")] = None,
           limit: Annotated[int, typer.Option("--limit", help="How many hits.")] = 10,
           app_name: AppName = None) -> None:
    """Print the rows closest in meaning to the text, best first."""
    from timber_tasks.runtime import initialize_timber

    with reported_errors():
        timber = initialize_timber(app_name=app_name)
        hits = timber.services.vectors.search(query=text, collection_name=_collection(timber, model),
                                              filter_dict=_filters(filter_ or []), limit=limit)
    show_hits(hits)


def show_hits(hits: list[dict[str, Any]]) -> None:
    table = Table("score", "id", "payload")
    for hit in hits:
        payload = {k: v for k, v in hit["payload"].items() if k not in ("pk", "model")}
        table.add_row(f"{hit['score']:.3f}", str(hit["id"]), ", ".join(f"{k}={v}" for k, v in payload.items()))
    console.print(table)
    if not hits:
        console.print("no hits (nothing embedded yet? `timber-tasks vectors reindex MODEL`)")


@app.command("status")
def status() -> None:
    """Each vector_search model, its collection and how many points it holds."""
    from timber_tasks.embeddings.indexing import vector_models
    from timber_tasks.runtime import initialize_timber
    from timber_tasks.stores.vectors import vector_store

    with reported_errors():
        timber = initialize_timber()
        store = vector_store(timber.settings)
        table = Table("model", "collection", "embedding model", "points")
        existing = set(store.collections())
        for vm in vector_models(timber):
            table.add_row(vm.name, vm.collection, vm.encoder.key,
                          str(store.count(vm.collection)) if vm.collection in existing else "-")
    console.print(table)


# -- the demo's step ------------------------------------------------------------------------

SAMPLE_NOTES = {
    "demo-note-chips": ("AAPL", "Apple designs its own processors for the iPhone and the Mac."),
    "demo-note-rates": ("JPM", "The bank earns more interest income when central banks raise rates."),
    "demo-note-oil": ("XOM", "Crude oil prices fell as OPEC increased production."),
    "demo-note-cars": ("TSLA", "Electric vehicle deliveries grew on strong demand in China."),
}
SAMPLE_QUERY = "who makes chips for phones?"


SAMPLE_AUTHOR = "demo-analyst"


def demo_step(celery_app: Any, timber: Any, wait_until: Callable[[Callable[[], Any], str], Any]) -> None:
    """Write sample research notes; the worker embeds them (after-commit jobs); then search them."""
    from timber_tasks.embeddings.indexing import point_id
    from timber_tasks.stores.vectors import vector_store

    User, Research = timber.get_model("User"), timber.get_model("StockResearchSession")
    with timber.db.session_scope() as session:  # one transaction: one embedding job for the four rows
        # The notes' author is not the sample user the demo erases at the end: they stay searchable.
        session.merge(User(id=SAMPLE_AUTHOR, email="analyst@example.com", username="demo_analyst"))
        session.flush()
        for pk, (symbol, summary) in SAMPLE_NOTES.items():
            session.merge(Research(id=pk, user_id=SAMPLE_AUTHOR, symbol=symbol, analysis_type="fundamental",
                                   summary=summary))
    console.print(f"[bold]Embeddings[/bold]: {len(SAMPLE_NOTES)} research notes written; the worker embeds them "
                  "on the embeddings queue")
    store, collection = vector_store(timber.settings), "stock_research_sessions"
    ids = [point_id("StockResearchSession", pk) for pk in SAMPLE_NOTES]
    wait_until(lambda: collection in store.collections() and len(store.get(collection, ids)) == len(ids),
               "the embedding job")
    # The search runs as a job too: the worker has the model loaded, this process need not load it.
    job = celery_app.tasks["timber.embeddings.search"].delay(SAMPLE_QUERY, collection, limit=3, app=timber.app_name)
    wait_until(job.ready, "the search job")
    console.print(f"search {SAMPLE_QUERY!r} (`timber-tasks vectors search StockResearchSession \"...\"`):")
    show_hits(job.get(timeout=10))
