"""Dagster's overhead: one long 720p video through the whole graph vs. direct calls.

In one run, on the same generated "edited" 720p file (pieces of the bundled Big Buck Bunny
shot with different looks; ~3 s per shot):

1. ``media``: the pure media functions called directly in one process
   (``heaters_media.pipeline.run_pipeline``: ingest, scenes, split, keyframes, sprites);
2. ``steps``: the same work through ``heaters_resources.steps`` (Postgres rows, object store,
   state transitions) in one process, no Dagster; the database is started and migrated before
   the clock starts;
3. ``heaters demo``, a fresh HEATERS_HOME each run, two numbers:

   - ``dagster (demo's own)``: the seconds ``heaters demo`` reports about itself: one
     ``dagster job execute`` of ``video_job`` (ingest, splice, then keyframes + sprites of all
     the video's clips), a Dagster CLI process on a Postgres-backed DAGSTER_HOME. Its clock
     starts after the embedded database is initialised, started and migrated and the Dagster
     instance is set up;
   - ``dagster (whole command)``: wall clock around the ``heaters demo`` subprocess, from
     process start to exit: interpreter and imports, ``initdb`` + start of the embedded
     Postgres, migrations, Dagster home, the run, summary. This is what a user waits for.

Each path runs ``--repeat`` times (best kept); ratios are to ``media`` of the same run. The
README figure comes from::

    .venv/bin/python -m benchmarks.bench_platform     # --minutes 10 --repeat 1

(target: dagster <= 1.15x media). ``--json`` adds one JSON line of results.
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
SAMPLE = ROOT / "tests" / "data" / "bbb_720p_5s.mp4"
BIN = Path(sys.executable).parent


def make_input(minutes: float, out: Path) -> Path:
    segments = max(2, int(minutes * 60 / 3))
    path = out / f"edit720_{minutes:g}min.mp4"
    if not path.exists():  # cached; written under another name first so no half file is kept
        part = path.with_name(f".partial-{path.name}")
        make_edited_footage(part, SAMPLE, segments=segments, min_len=50, max_len=100, seed=1)
        part.replace(path)
    return path


def run_media(video: Path, work: Path) -> float:
    from heaters_media.pipeline import run_pipeline

    t0 = time.perf_counter()
    result = run_pipeline(str(video), work / "media")
    print(f"  media: {len(result.clips)} clips, stages {result.timings}", flush=True)
    return time.perf_counter() - t0


def run_steps(video: Path, home: Path) -> float:
    """Seconds of the steps path (database started and migrated before the clock starts)."""
    from heaters_resources import states, steps
    from heaters_resources.db.embedded_pg import ensure_server
    from heaters_resources.db.engine import Database
    from heaters_resources.store.objects import LocalObjectStore

    db = Database(ensure_server(home).url)
    db.ensure_migrated()
    store = LocalObjectStore(home / "objects")
    t0 = time.perf_counter()
    vid = states.create_source_video(db, str(video))
    steps.ingest_source_video(db, store, vid)
    spliced = steps.splice_source_video(db, store, vid, clips="exact")
    steps.make_artifacts(db, store, keyframe_ids=spliced.identifiers, sprites=True)
    seconds = time.perf_counter() - t0
    print(f"  steps: {len(spliced.identifiers)} clips", flush=True)
    db.dispose()
    return seconds


def run_dagster(video: Path, home: Path, *extra: str) -> tuple[float, float]:
    """(seconds ``heaters demo`` reports, wall seconds of the whole command) on a fresh home;
    ``extra``: more arguments of ``heaters demo`` (``--clips proxy``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))}
    env["HEATERS_HOME"] = str(home)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "heaters"), "demo", str(video), *extra],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"heaters demo failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  dagster: {out['clips']} clips", flush=True)
    return float(out["seconds"]), wall


MEDIA, STEPS = "media", "steps"
DAGSTER_OWN, DAGSTER_WALL = "dagster (demo's own)", "dagster (whole command)"


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the generated input")
    ap.add_argument("--input", type=Path, help="use this video instead of a generated one")
    ap.add_argument("--repeat", type=int, default=1, help="runs per path; best is kept")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON line too")
    args = ap.parse_args(argv)
    cache = ROOT / "benchmarks" / "out"
    cache.mkdir(parents=True, exist_ok=True)
    video = args.input or make_input(args.minutes, cache)
    info = probe(video)
    load_before = _loadavg()
    print(
        f"input: {video.name} {info.width}x{info.height} {info.frame_count} frames "
        f"({info.duration / 60:.1f} min); {os.cpu_count()} CPUs; load average {load_before}",
        flush=True,
    )
    from heaters_resources.db.embedded_pg import stop_server

    results = {name: float("inf") for name in (MEDIA, STEPS, DAGSTER_OWN, DAGSTER_WALL)}
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        for k in range(args.repeat):
            work = Path(tmp) / f"run{k}"
            work.mkdir()
            results[MEDIA] = min(results[MEDIA], run_media(video, work))
            try:
                results[STEPS] = min(results[STEPS], run_steps(video, work / "home-steps"))
                # Dagster against the same work: every clip cut at splice, as the media path.
                own, wall = run_dagster(video, work / "home-dagster", "--clips", "exact")
                results[DAGSTER_OWN] = min(results[DAGSTER_OWN], own)
                results[DAGSTER_WALL] = min(results[DAGSTER_WALL], wall)
            finally:
                stop_server(work / "home-steps")
                stop_server(work / "home-dagster")
    load_after = _loadavg()
    base = results[MEDIA]
    per_min = info.duration / 60
    print(f"{'path':24} {'seconds':>9} {'s/min of input':>15} {'vs media':>9} {'vs steps':>9}")
    for name, secs in results.items():
        print(
            f"{name:24} {secs:9.1f} {secs / per_min:15.1f} {secs / base:8.2f}x "
            f"{secs / results[STEPS]:8.2f}x"
        )
    ratios = {
        "dagster_own_vs_media": round(results[DAGSTER_OWN] / base, 3),
        "dagster_wall_vs_media": round(results[DAGSTER_WALL] / base, 3),
        "dagster_own_vs_steps": round(results[DAGSTER_OWN] / results[STEPS], 3),
        "dagster_wall_vs_steps": round(results[DAGSTER_WALL] / results[STEPS], 3),
        "steps_vs_media": round(results[STEPS] / base, 3),
    }
    print(
        f"Dagster overhead vs direct media calls: {ratios['dagster_own_vs_media'] - 1:+.1%} by "
        f"the demo's own clock, {ratios['dagster_wall_vs_media'] - 1:+.1%} for the whole "
        f"command (target <= +15%); vs steps without Dagster: "
        f"{ratios['dagster_own_vs_steps'] - 1:+.1%} / {ratios['dagster_wall_vs_steps'] - 1:+.1%}; "
        f"set-up outside the demo's clock: {results[DAGSTER_WALL] - results[DAGSTER_OWN]:.1f} s"
    )
    print(f"load average before {load_before}, after {load_after}")
    if args.json:
        out = {
            "input": str(video),
            "frames": info.frame_count,
            "minutes": round(per_min, 3),
            "cpus": os.cpu_count(),
            "repeat": args.repeat,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "seconds": {name: round(secs, 2) for name, secs in results.items()},
            "ratios": ratios,
        }
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
