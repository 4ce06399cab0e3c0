"""An operator installs and removes override rule sets (SLA drills) on a running stack: the
next case start sees the change at once, although the folder listing is kept between starts."""

from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path

from casework.rules import list_rulesets, load_rules

DRILL = Path(__file__).parents[2] / "drills" / "work_permit" / "drill-minutes.json"


def _install(folder: Path, version: str) -> Path:
    rules = json.loads(DRILL.read_text(encoding="utf-8"))
    rules["version"] = version
    path = folder / f"{version}.json"
    path.write_text(json.dumps(rules), encoding="utf-8")
    return path


def _overrides(override_dir: Path) -> set[str]:
    return {r.version for r in list_rulesets("work_permit", override_dir) if r.override}


def _age(folder: Path) -> None:
    """The folder last changed a minute ago: its listing may be reused from now on."""
    old = time.time() - 60
    os.utime(folder, (old, old))


def test_installed_and_removed_drills_are_seen_by_the_next_start(tmp_path: Path) -> None:
    folder = tmp_path / "work_permit"
    assert _overrides(tmp_path) == set()  # no folder yet
    folder.mkdir()
    _age(folder)
    assert _overrides(tmp_path) == set()
    assert _overrides(tmp_path) == set()  # the listing is reused

    first = _install(folder, "drill-a")
    assert _overrides(tmp_path) == {"drill-a"}
    assert load_rules("work_permit", date(2026, 6, 1), "drill-a", tmp_path).version == "drill-a"
    _age(folder)
    assert _overrides(tmp_path) == {"drill-a"}

    first.unlink()
    assert _overrides(tmp_path) == set()


def test_a_drill_installed_in_the_same_clock_tick_as_the_last_is_seen(tmp_path: Path) -> None:
    """File times are coarse on many file systems (a few ms): a second file written in the
    same tick as the first leaves the folder's time as it was. Here that tick is made
    explicit by putting the folder's time back."""
    folder = tmp_path / "work_permit"
    folder.mkdir()
    _install(folder, "drill-a")
    tick = folder.stat().st_mtime_ns
    assert _overrides(tmp_path) == {"drill-a"}
    _install(folder, "drill-b")
    os.utime(folder, ns=(tick, tick))
    assert _overrides(tmp_path) == {"drill-a", "drill-b"}
