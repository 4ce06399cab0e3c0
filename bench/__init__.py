"""Benchmarks: the engine measured beside bare Temporal in the same run (issue 6).

    .venv/bin/python -m bench [--quick] [--scenarios 1,2,...] [--postgres-url URL] [--out bench/results]

See BENCHMARKS.md for what each scenario measures, its baseline and its target.
"""
