"""python -m bench [name ...]: run the benchmarks (all by default)."""

from __future__ import annotations

import importlib
import sys

from bench import BENCHMARKS

for name in sys.argv[1:] or BENCHMARKS:
    importlib.import_module(f"bench.{name}").main()
