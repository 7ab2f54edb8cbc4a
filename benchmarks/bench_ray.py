"""The same backfill on a Ray cluster of one worker node and of two: the scale-out ratio.

Why: Ray mode (heaters_resources/orchestration/ray_mode.py) is only worth its set-up if a second
machine makes a backfill faster. The cluster is simulated on this machine
(benchmarks/netns_cluster.py: each node a network namespace, Postgres and S3 over the bridge),
so the nodes share its cores: the ratio says how well runs spread and what Ray and Dagster
cost per run, not what two real machines would give.

Per node count: a fresh cluster (worker nodes of ``--cpus`` CPUs each), ``heaters dev`` in Ray
mode, ``--videos`` generated videos submitted and cut by the sensors (not timed), then a
re-splice backfill over all of them (``clip_splits`` with ``overwrite``, one run per video)
timed from its launch to its last run's end. Prints the load average, each time, where the
runs ran, and the ratio (one node / two nodes). Usage::

    sudo .venv/bin/python -m benchmarks.bench_ray [--videos 8] [--cpus 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.netns_cluster import cluster, run_placements, unavailable
from benchmarks.ray_platform import BUSY, Platform, platform, submit, wait


def resplice_backfill(p: Platform, partitions: list[str]) -> str:
    """Launch the benchmark's backfill (re-splice, one run per video); its id."""
    return p.launch_backfill("clip_splits", partitions, {"overwrite": True})


def backfill_done(p: Platform, backfill: str, runs: int) -> bool:
    tag = {"key": "dagster/backfill", "value": backfill}
    mine = [r for r in p.runs() if tag in r["tags"]]
    return len(mine) >= runs and not any(r["status"] in BUSY for r in mine)


def make_videos(folder: Path, count: int) -> list[Path]:
    """Distinct generated videos (the test factory's sources), 8 shots of 1-2 s at 320x180."""
    from tests.media_factory import make_video

    return [
        make_video(folder / f"bench{i}.mp4", [25 + 3 * i, 40, 30, 45, 35, 50, 30, 40])
        for i in range(count)
    ]


def measure(workers: int, videos: list[Path], cpus: int, root: Path) -> dict[str, Any]:
    """One cluster of ``workers`` nodes: the timed re-splice backfill over ``videos``."""
    with cluster(root, workers=workers, cpus_per_worker=cpus) as c, platform(c, root / "home") as p:
        submit(p, videos)
        wait("the videos cut", lambda: p.settled(len(videos)), 900)
        partitions = [str(i + 1) for i in range(len(videos))]
        t0 = time.perf_counter()
        backfill = resplice_backfill(p, partitions)
        wait("the backfill", lambda: backfill_done(p, backfill, len(partitions)), 900, poll=0.5)
        seconds = time.perf_counter() - t0
        places = run_placements(c.ray_address)
        tag = {"key": "dagster/backfill", "value": backfill}
        mine = [r for r in p.runs() if tag in r["tags"]]
        failed = [r["runId"] for r in mine if r["status"] != "SUCCESS"]
        nodes = Counter(places.get(r["runId"], ["?"])[-1] for r in mine)
    return {
        "workers": workers,
        "seconds": seconds,
        "runs": len(mine),
        "failed": failed,
        "runs_per_node": dict(nodes),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=1, help="CPUs each worker node offers Ray")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)
    if why := unavailable():
        raise SystemExit(f"bench_ray {why}")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        videos = make_videos(Path(tmp), args.videos)
        rows = [measure(w, videos, args.cpus, Path(tmp) / f"n{w}") for w in (1, 2)]
    load_after = os.getloadavg()
    one, two = rows
    ratio = one["seconds"] / two["seconds"]
    print(
        f"load average before: {', '.join(f'{x:.1f}' for x in load_before)}, after: "
        f"{', '.join(f'{x:.1f}' for x in load_after)}; {os.cpu_count()} CPUs shared by every "
        "simulated node: other work on the machine skews these timings"
    )
    print(f"re-splice backfill over {args.videos} videos, worker nodes of {args.cpus} CPU(s)")
    for row in rows:
        print(
            f"  {row['workers']} worker node(s): {row['seconds']:.1f} s, {row['runs']} runs "
            f"({row['runs_per_node']}), failed {len(row['failed'])}"
        )
    print(f"two nodes / one node speed-up: {ratio:.2f}x")
    print("command: python -m benchmarks.bench_ray " + " ".join(sys.argv[1:]))
    result = {
        "videos": args.videos,
        "cpus_per_worker": args.cpus,
        "one_node": one,
        "two_nodes": two,
        "speedup": ratio,
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
    }
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
