"""Market data without Celery: providers, normalisation into one frame shape, incremental bulk upsert."""
