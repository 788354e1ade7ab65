"""Benchmarks: scripts that measure the toolkit and print tables for docs/RESULTS.md."""
