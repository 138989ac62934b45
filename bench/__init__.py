"""Benchmarks for jwksgate: ``bench/run`` (or ``python -m bench.main``) runs them all.

Benchmarks are not tests: nothing here asserts a time. ``tests/test_bench_smoke.py`` only proves
that the harness runs end to end and that wrk's output is parsed.
"""
