"""Dagster's overhead: one long 720p video through the whole graph vs. direct calls.

In one run, on the same generated "edited" 720p file (pieces of the bundled Big Buck Bunny
shot with different looks; ~3 s per shot):

1. ``media``: the pure media functions called directly in one process
   (``heaters_media.pipeline.run_pipeline``: ingest, scenes, split, keyframes, sprites);
2. ``steps``: the same work through ``heaters_resources.steps`` (Postgres rows, object store,
   state transitions) in one process, no Dagster;
3. ``dagster``: ``heaters demo`` — the Dagster CLI (``dagster job execute``) running
   ``ingest_video_job`` and ``clip_artifacts_job`` (all clips in one partition-range run) on a
   Postgres-backed DAGSTER_HOME, process start-up included.

Usage: ``python -m benchmarks.bench_platform [--minutes 10]`` (target: dagster <= 1.15x media).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heaters_media.probe import probe
from tests.media_factory import make_edited_footage

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "media" / "bbb_720p_5s.mp4"
BIN = Path(sys.executable).parent


def make_input(minutes: float, out: Path) -> Path:
    segments = max(2, int(minutes * 60 / 3))
    path = out / f"edit720_{minutes:g}min.mp4"
    if not path.exists():
        make_edited_footage(path, SAMPLE, segments=segments, min_len=50, max_len=100, seed=1)
    return path


def run_media(video: Path, work: Path) -> float:
    from heaters_media.pipeline import run_pipeline

    t0 = time.perf_counter()
    result = run_pipeline(str(video), work / "media")
    print(f"  media: {len(result.clips)} clips, stages {result.timings}", flush=True)
    return time.perf_counter() - t0


def run_steps(video: Path, home: Path) -> float:
    from heaters_resources import states, steps
    from heaters_resources.db import Database
    from heaters_resources.embedded_pg import ensure_server
    from heaters_resources.storage import LocalObjectStore

    db = Database(ensure_server(home).url)
    db.ensure_migrated()
    store = LocalObjectStore(home / "objects")
    t0 = time.perf_counter()
    vid = states.create_source_video(db, str(video))
    steps.ingest_source_video(db, store, vid)
    spliced = steps.splice_source_video(db, store, vid)
    steps.keyframe_clips(db, store, spliced.identifiers)
    steps.sprite_clips(db, store, spliced.identifiers)
    seconds = time.perf_counter() - t0
    print(f"  steps: {len(spliced.identifiers)} clips", flush=True)
    db.dispose()
    return seconds


def run_dagster(video: Path, home: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))}
    env["HEATERS_HOME"] = str(home)
    proc = subprocess.run([str(BIN / "heaters"), "demo", str(video)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"heaters demo failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  dagster: {out['clips']} clips", flush=True)
    return float(out["seconds"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the generated input")
    ap.add_argument("--input", type=Path, help="use this video instead of a generated one")
    args = ap.parse_args(argv)
    cache = ROOT / "benchmarks" / "out"
    cache.mkdir(parents=True, exist_ok=True)
    video = args.input or make_input(args.minutes, cache)
    info = probe(video)
    print(f"input: {video.name} {info.width}x{info.height} {info.frame_count} frames "
          f"({info.duration / 60:.1f} min)", flush=True)
    from heaters_resources.embedded_pg import stop_server

    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        work = Path(tmp)
        results = {"media": run_media(video, work)}
        try:
            results["steps"] = run_steps(video, work / "home-steps")
            results["dagster"] = run_dagster(video, work / "home-dagster")
        finally:
            stop_server(work / "home-steps")
            stop_server(work / "home-dagster")
    base = results["media"]
    per_min = info.duration / 60
    print(f"{'path':10} {'seconds':>9} {'s/min of input':>15} {'vs media':>9}")
    for name, secs in results.items():
        print(f"{name:10} {secs:9.1f} {secs / per_min:15.1f} {secs / base:9.2f}x")
    print(f"Dagster overhead vs direct media calls: {results['dagster'] / base - 1:+.1%} "
          f"(target <= +15%); vs steps without Dagster: "
          f"{results['dagster'] / results['steps'] - 1:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
