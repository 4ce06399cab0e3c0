"""Experiments: the engine changes recommended in BENCHMARKS.md, tried without editing the
engine (a dependency override, a monkeypatched renderer, bare workflows of other
shapes), so each recommendation comes with a measured effect.

    .venv/bin/python -m bench --experiment short-sessions --scenarios 2
    .venv/bin/python -m bench --experiment process-render --scenarios 5,2
    .venv/bin/python -m bench.experiments.bare_shapes
"""
