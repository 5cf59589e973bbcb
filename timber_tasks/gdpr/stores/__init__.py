"""The stores that can hold personal data: ONE list, kept complete by tests/test_gdpr_stores.py.

A new store (a new platform table, a new cache or vector backend) gets a class here and a
line in STORE_TYPES; the tests fail while a platform table or a model with user data is
claimed by none. Erasure runs them in this order: the database first (one transaction),
then the copies.
"""

from __future__ import annotations

from typing import Any

from timber_tasks.gdpr.stores.base import ExportSink, PersonalDataStore, Progress
from timber_tasks.gdpr.stores.cache import CacheStore
from timber_tasks.gdpr.stores.database import DatabaseStore, unclaimed_models
from timber_tasks.gdpr.stores.jobs import DeadLetterStore, JobRecordStore, OutboxStore
from timber_tasks.gdpr.stores.results import CeleryResultStore
from timber_tasks.gdpr.stores.vectors import VectorStore

STORE_TYPES: tuple[type[PersonalDataStore], ...] = (
    DatabaseStore,
    CacheStore,
    VectorStore,
    JobRecordStore,
    OutboxStore,
    DeadLetterStore,
    CeleryResultStore,
)

# Each URL Settings can configure, and the store that covers what it points at (tests check both ways).
SETTINGS_STORES = {"database_url": DatabaseStore.name, "result_backend_url": CeleryResultStore.name,
                   "redis_url": CacheStore.name, "qdrant_url": VectorStore.name}
NOT_A_STORE = {"broker_url": "jobs in flight only: sealed, and gone once a worker takes them (the outbox copy of a "
                             "job about the subject is erased)"}


def open_stores(timber: Any) -> list[PersonalDataStore]:
    """Every store of this Timber, in erasure order."""
    return [store_type(timber) for store_type in STORE_TYPES]


__all__ = ["NOT_A_STORE", "SETTINGS_STORES", "STORE_TYPES", "ExportSink", "PersonalDataStore", "Progress",
           "open_stores", "unclaimed_models"]
