"""Benchmarks and soaks: each starts what it measures and writes BENCHMARKS.md."""
