"""Tooling for tests, benchmarks and ``scripts/cluster``; not part of the shipped package."""
