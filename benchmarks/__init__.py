"""Benchmark scripts: each compares cloudtaser with the obvious alternative in one run; run as
``python -m benchmarks.NAME`` (``nox -s benchmarks -- NAME``)."""
