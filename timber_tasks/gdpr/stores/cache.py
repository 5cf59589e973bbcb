"""Both cache levels: this process's L1 and the shared L2 (Redis), for every cached GDPR model.

The database erasure's after-write step already invalidates the models (every host stops
serving the old rows), but a whole-model invalidation leaves the old entries' bytes in
Redis until their TTL: this store finds entries by content and deletes them. L1 entries
of other processes can no longer be served once invalidated and age out with their TTL.
"""

from __future__ import annotations

from typing import Any

from timber_tasks.gdpr.stores.base import PersonalDataStore
from timber_tasks.gdpr.subject import Subject


class CacheStore(PersonalDataStore):
    name = "cache"

    def __init__(self, timber: Any) -> None:
        super().__init__(timber)
        cache = timber.cache
        self.models = [m for m in timber.registry.with_feature("gdpr") if cache is not None and cache.is_cached(m)]

    def _matches(self, model: type[Any], subject: Subject) -> tuple[list[str], list[str]]:
        field = model.timber_spec.spec.gdpr.user_id_field
        cache = self.timber.cache
        l1 = [k for k, record in cache.l1_records(model) if str(record.get(field)) == subject.user_id]
        # An entry no configured key opens cannot be read by anyone: not residue, but dropped with the rest.
        l2 = [k for k, record in cache.l2_records(model) if record is not None
              and str(record.get(field)) == subject.user_id]
        return l1, l2

    def erase(self, subject: Subject) -> int:
        cache = self.timber.cache
        changed = 0
        for model in self.models:
            l1, l2 = self._matches(model, subject)
            cache.drop_l1(model, l1)
            cache.drop_l2(l2)
            # Again, in case the database part committed in an earlier, interrupted run whose hook never ran.
            cache.invalidate(model, whole_model=True)
            changed += len(l1) + len(l2)
        return changed

    def residue(self, subject: Subject) -> dict[str, int]:
        found: dict[str, int] = {}
        for model in self.models:
            l1, l2 = self._matches(model, subject)
            name = model.timber_spec.name
            if l1:
                found[f"cache:L1:{name}"] = len(l1)
            if l2:
                found[f"cache:L2:{name}"] = len(l2)
        return found
