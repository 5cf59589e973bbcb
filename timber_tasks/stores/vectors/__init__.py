"""Vector stores: the Qdrant server when QDRANT_URL is set, else the embedded Qdrant Edge store under the data dir."""

from __future__ import annotations

import os
import threading
from typing import Any

from timber_tasks.stores.vectors.base import (
    APP_KEY,
    FINGERPRINT_KEY,
    SOURCE_KEY,
    USER_KEY,
    FilterDict,
    Hit,
    Marks,
    StoredPoint,
    VectorPoint,
    VectorStore,
    VectorStoreError,
)

VECTORS_FOLDER = "vectors"  # under TIMBER_DATA_DIR

_stores: dict[tuple[int, str], VectorStore] = {}
_lock = threading.Lock()


def open_vector_store(settings: Any) -> VectorStore:
    """A new store for these settings (the caller closes it)."""
    if settings.qdrant_url:
        from timber_tasks.stores.vectors.qdrant import QdrantStore

        return QdrantStore.connect(settings.qdrant_url)
    from timber_tasks.stores.vectors.embedded import EmbeddedStore

    return EmbeddedStore((settings.data_dir / VECTORS_FOLDER).resolve())


def vector_store(settings: Any) -> VectorStore:
    """This process's store for these settings, built on first use (a forked child builds its own)."""
    key = (os.getpid(), settings.qdrant_url or str((settings.data_dir / VECTORS_FOLDER).resolve()))
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = open_vector_store(settings)
        return store


def reset_vector_stores() -> None:
    """Close and forget this process's stores (tests; a changed data dir)."""
    with _lock:
        for (pid, _), store in list(_stores.items()):
            if pid == os.getpid():
                store.close()
        _stores.clear()


__all__ = ["APP_KEY", "FINGERPRINT_KEY", "SOURCE_KEY", "USER_KEY", "FilterDict", "Hit", "Marks", "StoredPoint",
           "VectorPoint", "VectorStore", "VectorStoreError", "open_vector_store", "reset_vector_stores", "vector_store"]
