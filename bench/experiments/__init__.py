"""Experiments: variants of the engine measured beside it (`bench --experiment NAME`,
see `EXPERIMENTS` in `bench/__main__.py`), so each recommendation in BENCHMARKS.md comes
with a measured effect; results go to `bench/results/experiments/`. Once a
recommendation is taken into the engine its experiment is removed: process-render (now
`activities/documents.py`), short-sessions (the routes close their session before
awaiting Temporal), bare_shapes (bookkeeping is now local activities, merged per step).

    .venv/bin/python -m bench --experiment one-worker --scenarios 2
"""
