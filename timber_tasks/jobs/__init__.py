"""Job bookkeeping that knows nothing of Celery: idempotency, outbox, dead letters, persistence."""
