"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median seconds of `repeat` runs (after one warm-up): steadier than the mean on a busy box."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """Print name, figure and ratio to the named baseline row."""
    base = next(value for name, value, _ in rows if name == baseline)
    print(f"\n== {title}")
    for name, value, unit in rows:
        print(f"  {name:<48} {value:>12,.1f} {unit:<10} {value / base:6.2f}x of {baseline}")
