"""Benchmarks that measure side by side in one run: python -m lab bench cag | train | serve."""
