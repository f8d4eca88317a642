"""Micro-benchmarks of segbench parts against reference implementations."""
