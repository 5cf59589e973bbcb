"""Which embedding work a committed transaction calls for: per model, the keys written and deleted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

CHUNK = 500  # keys per job: a big bulk write becomes several jobs, never one per row


@dataclass(frozen=True)
class EmbeddingWork:
    """One job's worth: embed `written`, remove `deleted`, or reconcile the whole model."""

    model: str
    written: list[Any]
    deleted: list[Any]
    whole_model: bool = False


def has_vectors(model: type[Any]) -> bool:
    block = model.timber_spec.spec.vector_search
    return block is not None and block.enabled


def work_for(committed: Any, chunk: int = CHUNK) -> Iterator[EmbeddingWork]:
    """From CommittedWrites (features/writes.py): the jobs, chunked; models without vector_search give none."""
    for name, writes in committed.by_model.items():
        if not has_vectors(writes.model):
            continue
        if writes.whole_model:  # a WHERE-based write or a cascade: keys unknown, so reconcile the table
            yield EmbeddingWork(name, [], [], whole_model=True)
            continue
        # A key both deleted and written (deleted, then inserted again) is embedded: the job reads the
        # row and removes the vector of any key whose row is gone by then, so either order ends right.
        written = sorted(writes.written, key=str)
        gone = sorted(set(writes.deleted) - set(writes.written), key=str)
        for start in range(0, max(len(written), len(gone)), chunk):
            yield EmbeddingWork(name, written[start:start + chunk], gone[start:start + chunk])
