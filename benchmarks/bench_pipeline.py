"""The media engine against one plain decode, and Dagster against the media engine, in one run.

Input: a generated "edited" 720p H.264 file (pieces of the bundled Big Buck Bunny shot, each
with its own look, ~65 frames a piece) encoded with a fixed key-frame interval (>= 250) chosen
so that **no cut falls on a key frame**: every clip must be re-encoded to be frame-exact, the
hard case (cameras and platform re-encodes keep such intervals). ``--input`` measures a file of
yours instead. Rounds of (``--repeat``, best of each kept; each demo runs right after the
pipeline it is compared with, and each round's own ratio is printed too):

- ``plain decode``: ``ffmpeg -i FILE -f null -`` (ffmpeg's default threading): the yardstick;
- ``media pipeline``: ``python -m heaters_media pipeline FILE --embed heaters/pixels-v1`` in
  its own process (ingest, scene detection, cutting, keyframes + sprites, and the review
  descriptor of every clip from its keyframes' frames, which the platform's pass computes too
  for similar clips at review): its wall time, per-step seconds, processes started and peak
  memory (its own and its largest child's) from its JSON;
- ``media pipeline, review proxies``: the same with ``--clips proxy``: no clip file is cut, a
  360-line proxy of each clip comes out of the keyframes' and sprites' decode (the full-quality
  cut is left for the clips a reviewer keeps);
- ``heaters demo --clips exact`` (unless ``--no-demo``): the whole platform on a fresh
  HEATERS_HOME (embedded Postgres, one Dagster run), every clip cut at splice; the seconds it
  reports about its run, and the wall time of the command. Then ``heaters demo --clips
  proxy`` (the platform's default: clips cut on approval), against the media pipeline's
  proxy mode and the plain decode.

Prints a table, the ratios the media-engine issue tracks (pipeline / decode, demo / pipeline)
and the load average before and after (the machine is shared: read figures with it). The README
figures come from::

    .venv/bin/python -m benchmarks.bench_pipeline --minutes 2 --repeat 2

``--json`` prints one JSON line too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_platform import run_dagster  # noqa: E402
from benchmarks.bench_split import fixed_gop_avoiding  # noqa: E402
from heaters_media.probe import packet_index  # noqa: E402
from heaters_resources.db.embedded_pg import stop_server  # noqa: E402
from heaters_resources.search.space import DESCRIPTOR_MODEL  # noqa: E402
from tests.media_factory import edited_cuts, make_edited_footage  # noqa: E402

BBB = ROOT / "tests" / "data" / "bbb_720p_5s.mp4"
PIECE_FRAMES = (30, 100)
#: What the platform's artifacts pass embeds by default (HEATERS_REVIEW_SIMILAR): the media
#: pipeline is asked for the same, so the demo / pipeline ratio compares the same media work.
REVIEW_DESCRIPTOR = DESCRIPTOR_MODEL


def make_input(minutes: float, work: Path) -> Path:
    """The 720p edit with no key frame on any cut (cached in ``work`` by its length)."""
    segments = max(2, round(minutes * 60 * 25 / 65))
    lo, hi = PIECE_FRAMES
    cuts = edited_cuts(segments, min_len=lo, max_len=hi)
    gop = fixed_gop_avoiding(cuts)
    path = work / f"nokeycuts_720p_{minutes:g}min_g{gop}.mp4"
    if not path.exists():
        part = path.with_name(f".partial-{path.name}")
        made, real = make_edited_footage(
            part, BBB, segments=segments, min_len=lo, max_len=hi, size=(1280, 720), gop=gop
        )
        if real != cuts:
            raise SystemExit("the generated cuts differ from the planned ones")
        made.replace(path)
    return path


def plain_decode(path: Path) -> None:
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-f",
            "null",
            "-",
        ],
        check=True,
    )


def media_pipeline(
    path: Path, out: Path, clips: str = "exact", embed: str | None = REVIEW_DESCRIPTOR
) -> dict[str, Any]:
    """Run ``python -m heaters_media pipeline`` in its own process; its JSON result.

    ``embed``: by default the review descriptor, which the platform's artifacts pass computes
    too (HEATERS_REVIEW_SIMILAR, on by default: similar clips on the review page), so both
    sides of the demo / pipeline ratio do the same media work."""
    args = ["pipeline", str(path), "--out", str(out), "--clips", clips, "--quiet"]
    if embed:
        args += ["--embed", embed]
    proc = subprocess.run(
        [sys.executable, "-m", "heaters_media", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the generated input")
    ap.add_argument("--input", type=Path, help="measure this video instead")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; the best of each is kept")
    ap.add_argument("--no-demo", action="store_true", help="skip `heaters demo`")
    ap.add_argument("--work", type=Path, help="folder for the generated input (cached)")
    ap.add_argument("--json", action="store_true", help="print one JSON line of results too")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.gettempdir()) / "heaters-bench-pipeline"
    work.mkdir(parents=True, exist_ok=True)
    video = args.input or make_input(args.minutes, work)
    index = packet_index(video)
    load_before = [round(x, 2) for x in os.getloadavg()]
    best: dict[str, float] = {}
    media: dict[str, Any] = {}
    proxy: dict[str, Any] = {}
    demo_wall = float("inf")
    paired: dict[str, list[float]] = {"exact": [], "proxy": []}
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            t0 = time.perf_counter()
            plain_decode(video)
            best["plain_decode_s"] = min(best.get("plain_decode_s", 1e9), time.perf_counter() - t0)
            # Each demo runs right after the pipeline it is compared with (load drifts on a
            # shared machine), and each round's own ratio is kept next to the best-of ratio.
            for mode in ("exact", "proxy"):
                key = "pipeline_s" if mode == "exact" else "pipeline_proxy_s"
                t0 = time.perf_counter()
                result = media_pipeline(video, Path(tmp) / mode, clips=mode)
                seconds = time.perf_counter() - t0
                shutil.rmtree(Path(tmp) / mode, ignore_errors=True)
                if seconds < best.get(key, 1e9):
                    best[key] = seconds
                    if mode == "exact":
                        media = result
                    else:
                        proxy = result
                if args.no_demo:
                    continue
                home = Path(tmp) / f"home-{mode}{k}"
                try:
                    own, wall = run_dagster(video, home, "--clips", mode)
                finally:  # the demo leaves its embedded Postgres running
                    stop_server(home)
                demo_key = "demo_s" if mode == "exact" else "demo_proxy_s"
                best[demo_key] = min(best.get(demo_key, 1e9), own)
                if mode == "exact":
                    demo_wall = min(demo_wall, wall)
                paired[mode].append(round(own / seconds, 3))
    out: dict[str, Any] = {
        "input": str(video),
        "frames": index.count,
        "key_frames": len(index.keyframes),
        "clips": len(media["clips"]),
        "clips_copied": sum(c["method"] == "copy" for c in media["clips"]),
        **{k: round(v, 3) for k, v in best.items()},
        "pipeline_vs_decode": round(best["pipeline_s"] / best["plain_decode_s"], 2),
        "steps_s": media["timings"],
        "processes": media["processes"],
        "peak_rss_mb": media["peak_rss_mb"],
        "proxy_vs_decode": round(best["pipeline_proxy_s"] / best["plain_decode_s"], 2),
        "proxy_steps_s": proxy["timings"],
        "proxy_processes": proxy["processes"],
        "proxy_peak_rss_mb": proxy["peak_rss_mb"],
        "pipeline_embedding": (media.get("embedding") or {}).get("model"),
        "cpus": os.cpu_count(),
    }
    if not args.no_demo:
        out["demo_wall_s"] = round(demo_wall, 3)
        out["demo_vs_pipeline"] = round(best["demo_s"] / best["pipeline_s"], 3)
        out["demo_proxy_vs_pipeline_proxy"] = round(
            best["demo_proxy_s"] / best["pipeline_proxy_s"], 3
        )
        out["demo_proxy_vs_decode"] = round(best["demo_proxy_s"] / best["plain_decode_s"], 2)
        out["rounds_demo_vs_pipeline"] = paired["exact"]
        out["rounds_demo_proxy_vs_pipeline_proxy"] = paired["proxy"]
    out["load_before"], out["load_after"] = load_before, [round(x, 2) for x in os.getloadavg()]

    print(f"input: {video.name}: {index.count} frames, {len(index.keyframes)} key frames")
    print(f"  plain decode      {best['plain_decode_s']:8.2f} s")
    print(
        f"  media pipeline    {best['pipeline_s']:8.2f} s   {out['pipeline_vs_decode']:.2f}x decode"
    )
    print(f"    steps {media['timings']}, processes {media['processes']['total']}")
    print(f"    peak RSS (MiB) {media['peak_rss_mb']}")
    print(
        f"  review proxies    {best['pipeline_proxy_s']:8.2f} s   "
        f"{out['proxy_vs_decode']:.2f}x decode (--clips proxy: no clip file cut)"
    )
    print(f"    steps {proxy['timings']}, processes {proxy['processes']['total']}")
    print(f"    peak RSS (MiB) {proxy['peak_rss_mb']}")
    if not args.no_demo:
        print(
            f"  demo --clips exact {best['demo_s']:7.2f} s   "
            f"{out['demo_vs_pipeline']:.3f}x pipeline"
        )
        print(f"    whole command   {demo_wall:8.2f} s")
        print(
            f"  demo --clips proxy {best['demo_proxy_s']:7.2f} s   "
            f"{out['demo_proxy_vs_pipeline_proxy']:.3f}x pipeline --clips proxy, "
            f"{out['demo_proxy_vs_decode']:.2f}x decode"
        )
        print(f"    each round's demo / pipeline: exact {paired['exact']}, proxy {paired['proxy']}")
    print(f"  load average {load_before} -> {out['load_after']}, {os.cpu_count()} cpus")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
