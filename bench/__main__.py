"""python -m bench [name ...]: run the benchmarks (all by default)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["cli_start", "model_loading", "features", "persistence_jobs", "embedded_broker", "market_data",
              "embeddings", "gdpr"]

for name in sys.argv[1:] or BENCHMARKS:
    importlib.import_module(f"bench.{name}").main()
