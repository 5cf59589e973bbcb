"""Benchmarks: each measures our code beside a baseline in the same run and reports the ratio."""
