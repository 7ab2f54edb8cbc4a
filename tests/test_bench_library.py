"""benchmarks/bench_library.py still runs at 2,000 clips: its output's structure only (every
figure present, counts that must agree, times non-negative numbers), never a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIPS, PER_VIDEO = 2_000, 25
TIMES = (
    "build_s",
    "backfill_run_creation_s",
    "backfill_stock_s",
    "backfill_subset_events_s",
    "materializations_s",
    "partitions_page_cold_s",
    "partitions_page_s",
    "sensor_scenario_s",
    "sensor_tick_s",
    "near_duplicates_s",
    "queue_page_s",
    "status_s",
    "export_s",
)
SENSORS = {"new_clips_sensor", "approved_clips_sensor", "review_actions_sensor"}


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def test_bench_library_structure() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_library", "--clips", str(CLIPS), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    for key in TIMES:
        assert _seconds(out[key]), (key, out[key])
    assert out["build_phases"] and all(_seconds(v) for v in out["build_phases"].values())
    assert set(out["sensor_ticks_s"]) == SENSORS == set(out["sensor_run_requests"])
    assert all(_seconds(v) for v in out["sensor_ticks_s"].values())
    assert out["sensor_tick_s"] == max(out["sensor_ticks_s"].values())
    for key in ("load_avg", "load_avg_before"):
        assert len(out[key]) == 3 and all(_seconds(v) for v in out[key]), key
    assert out["cpus"] >= 1 and out["dim"] == 512 and out["clips_per_video"] == PER_VIDEO
    assert out["dagster_storage"].startswith(("postgres", "sqlite"))

    # The library: its counts agree with each other and with what each page saw.
    videos, by_state = out["videos"], out["clips_by_state"]
    assert out["clips"] == CLIPS == sum(by_state.values())
    assert videos == -(-CLIPS // PER_VIDEO)
    for state in ("pending_review", "approved", "embedded", "archived"):
        assert by_state.get(state, 0) > 0, state
    assert out["runs_created"] == out["backfill_ranges"] == -(-videos // 20)
    assert out["compared_runs"] == min(100, out["backfill_ranges"])
    page = out["partitions_page"]
    assert page["partitions"] == videos
    assert out["materializations_logged"] == videos // 2 == page["materialized"]
    assert page["materialized"] + page["failed"] + page["in_progress"] <= videos
    assert out["queue_pending"] == by_state["pending_review"]
    assert out["queue_ids"] == min(50, by_state["pending_review"])
    assert out["status_videos"] == videos
    approved = ("approved", "embedding", "embedded", "embedding_failed")
    assert out["export_rows"] == sum(by_state.get(s, 0) for s in approved)
    assert isinstance(out["near_duplicate_pairs"], int) and out["near_duplicate_pairs"] >= 0
    assert out["near_duplicates_planted"] > 0
    assert out["sensor_scenario"] == {"new_clips": 1000, "approvals": 1000, "review_events": 1000}
    assert all(n >= 1 for n in out["sensor_run_requests"].values())
