"""Embedding rows of vector_search models: the encoder (sentence-transformers) and indexing; no Celery here."""
