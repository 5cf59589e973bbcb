"""Semantic search over the vector_search models (seeds 000 and 003): one collection, or several merged by score.

An app searches its own models' collections and the shared ones; another app's is refused
(AccessDeniedError), not silently empty. Filters only narrow: every filter_dict entry must hold,
and a service bound to a user (`for_user`) always adds that user and refuses a filter naming
anyone else.
"""

from __future__ import annotations

from typing import Any

from timber_tasks.errors import AccessDeniedError, NotFoundError, ValidationError
from timber_tasks.features import isolation
from timber_tasks.services.base import BaseService, Record
from timber_tasks.stores.vectors import (
    APP_KEY,
    FINGERPRINT_KEY,
    SOURCE_KEY,
    USER_KEY,
    FilterDict,
    VectorStore,
    vector_store,
)

HIDDEN_KEYS = (SOURCE_KEY, FINGERPRINT_KEY)  # bookkeeping, not for callers
MAX_LIMIT = 1000


class VectorSearchService(BaseService):
    """`timber.services.vectors.search(query=..., collection_name=..., filter_dict=..., limit=...)`."""

    def __init__(self, timber: Any, *, store: VectorStore | None = None, user_id: str | None = None) -> None:
        super().__init__(timber)
        self._store = store
        self.user_id = user_id

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            self._store = vector_store(self.timber.settings)
        return self._store

    def for_user(self, user_id: str) -> VectorSearchService:
        """The same service limited to one user's points: a filter cannot widen it."""
        if not user_id:
            raise ValidationError("VectorSearch", "user_id", "is required and may not be empty")
        return VectorSearchService(self.timber, store=self._store, user_id=user_id)

    def collections(self) -> list[str]:
        """The collections this app may search."""
        return sorted(c for c, m in self._by_collection().items() if self._may_search(m))

    def search(self, query: str, collection_name: str, filter_dict: FilterDict | None = None,
               limit: int = 10) -> list[Record]:
        """The closest rows, best first: {id, score, collection, model, payload}."""
        vm = self._model_of(collection_name)
        return self._search_prepared(vm, vm.encoder.encode([self._query(query)])[0], filter_dict, limit)

    def unified_search(self, query: str, collection_names: list[str] | None = None,
                       filter_dict: FilterDict | None = None, limit: int = 20) -> list[Record]:
        """Several collections (default: every one this app may search), merged by score."""
        names = collection_names if collection_names is not None else self.collections()
        models = [self._model_of(name) for name in names]
        text = self._query(query)
        vectors: dict[str, Any] = {}
        hits: list[Record] = []
        for vm in models:
            if vm.encoder.key not in vectors:  # one query encoding per embedding model
                vectors[vm.encoder.key] = vm.encoder.encode([text])[0]
            hits.extend(self._search_prepared(vm, vectors[vm.encoder.key], filter_dict, limit))
        hits.sort(key=lambda h: h["score"], reverse=True)
        return hits[:limit]

    # -- internals -------------------------------------------------------------------------

    def _search_prepared(self, vm: Any, vector: Any, filter_dict: FilterDict | None, limit: int) -> list[Record]:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(vm.name, "limit", f"must be between 1 and {MAX_LIMIT}, not {limit}")
        where = self._narrowed(vm, filter_dict)
        if self.store.dimension(vm.collection) is None:
            return []  # nothing embedded yet: the collection appears with the first vector
        return [{"id": h.payload.get("pk"), "score": h.score, "collection": vm.collection, "model": vm.name,
                 "payload": {k: v for k, v in h.payload.items() if k not in HIDDEN_KEYS}}
                for h in self.store.search(vm.collection, vector, where, limit)]

    def _narrowed(self, vm: Any, filter_dict: FilterDict | None) -> dict[str, Any]:
        where = dict(filter_dict or {})
        if self.user_id is not None:
            asked = where.get(USER_KEY, self.user_id)
            asked_set = set(asked) if isinstance(asked, list | tuple | set | frozenset) else {asked}
            if asked_set != {self.user_id}:
                raise AccessDeniedError(f"this search is limited to user {self.user_id!r}; the filter asks for "
                                        f"{sorted(map(str, asked_set))}", model=vm.name)
            where[USER_KEY] = self.user_id
        scope = vm.model.timber_spec.spec.app_scope
        if scope is not None and self.app != isolation.PLATFORM_APP:  # a model split by app: own points only
            asked_app = where.get(APP_KEY, self.app)
            if asked_app != self.app:
                raise AccessDeniedError(f"app {self.app!r} may not search points of app {asked_app!r}",
                                        model=vm.name)
            where[APP_KEY] = self.app
        return where

    def _query(self, query: str) -> str:
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("VectorSearch", "query", "is required and may not be empty")
        return query.strip()

    def _by_collection(self) -> dict[str, Any]:
        from timber_tasks.embeddings.changes import has_vectors

        found: dict[str, Any] = {}
        for model in self.timber.registry:
            if has_vectors(model):
                spec = model.timber_spec
                found[spec.spec.vector_search.collection or spec.table_name] = model
        return found

    def _may_search(self, model: Any) -> bool:
        owner = model.timber_spec.app
        return owner is None or owner == self.app or self.app == isolation.PLATFORM_APP

    def _model_of(self, collection_name: str) -> Any:
        from timber_tasks.embeddings.indexing import vector_model

        by_collection = self._by_collection()
        model = by_collection.get(collection_name)
        if model is None:
            raise NotFoundError(f"no vector collection {collection_name!r}; this app may search: "
                                f"{', '.join(self.collections()) or 'none'}", model="VectorSearch")
        if not self._may_search(model):
            raise AccessDeniedError(f"app {self.app!r} may not search collection {collection_name!r}: it belongs "
                                    f"to app {model.timber_spec.app!r}", model=model.timber_spec.name)
        return vector_model(self.timber, model.timber_spec.name)
