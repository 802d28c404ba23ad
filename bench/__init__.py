"""Benchmarks of flex-bridge against the usual approach (``make bench``; docs/performance.md)."""
