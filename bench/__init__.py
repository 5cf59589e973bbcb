"""Benchmarks: `python -m bench [name ...]` (`make bench`); each figure beside a baseline in the same run."""

BENCHMARKS = ["cli_start", "model_loading", "features", "persistence_jobs", "embedded_broker", "market_data",
              "embeddings", "gdpr"]
