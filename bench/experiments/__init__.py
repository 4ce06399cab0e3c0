"""Experiments: the engine changes recommended in BENCHMARKS.md, tried without editing the
engine (a dependency override, a monkeypatched renderer, bare workflows of other
shapes), so each recommendation comes with a measured effect. Once a recommendation is
taken into the engine its experiment is removed (process-render: now
`activities/documents.py`).

    .venv/bin/python -m bench --experiment short-sessions --scenarios 2
    .venv/bin/python -m bench.experiments.bare_shapes
"""
