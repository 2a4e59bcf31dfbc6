"""Benchmarks: ``python -m edgeconv.bench <name> [options]`` (names in ``edgeconv.bench.__main__``)."""
