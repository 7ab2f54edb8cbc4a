"""Scene detection: speed and accuracy against PySceneDetect, like for like, and two decodes.

One run, one file, every contender measured back to back, in ``--repeat`` rounds (each round
runs every contender once; the best time of each is kept):

- ``heaters adaptive`` / ``heaters content`` / ``heaters histogram``: :func:`detect_scenes`
  (whole call: probe, key-frame index, decode, scoring, cut selection),
- ``PySceneDetect adaptive`` / ``PySceneDetect content``: PySceneDetect 0.7's AdaptiveDetector
  and ContentDetector (their defaults, auto downscale),
- ``transnetv2``: :func:`heaters_media.transnet.detect_transnetv2` (the ``ml`` extra; skipped
  without it), default batch size, model loaded before the rounds (its load time is printed
  apart). ``--transnet-batches 1,4,16`` adds, per batch size, the whole call
  (``transnetv2 batch N``: decode to 48x27 + network) and the network alone on frames decoded
  beforehand (``transnetv2 model batch N``),
- ``plain decode``: ``ffmpeg -i FILE -f null -``, one process, full-resolution decode with the
  loop filter, nothing scaled or piped. A familiar yardstick, *not* a floor: our detector decodes
  with cheaper settings and several processes, so it can beat it,
- ``matched decode``: the decode our detector runs, without any detection: the same
  key-frame-aligned segments planned the same way (one ffmpeg per segment, side by side, as many
  processes as ``detect_scenes`` starts), each through :func:`heaters_media.frames.stream_frames`
  with the same flags (``-threads``, ``-skip_loop_filter all``, ``-noaccurate_seek -ss`` per
  segment, ``scale=W:H:flags=area,format=rgb24`` to the analysis width, raw frames to a pipe),
  the frames read and discarded. Planning it (probe + packet index) is timed apart
  (``planning``); our detector's time includes its own planning.

Reported pairs compare like with like: heaters ``adaptive`` vs PySceneDetect AdaptiveDetector
and heaters ``content`` vs ContentDetector, each with its speed ratio and both F1s, and each of
our detectors against both decodes.

With no ``--input``, a 720p "edited" file is generated from the bundled Big Buck Bunny shot
(pieces of the shot with different looks, concatenated), so the true cuts are known and F1
(1-frame tolerance) is reported too. The README figures come from::

    .venv/bin/python -m benchmarks.bench_scenes        # --segments 40 --repeat 2

Other inputs: ``--input FILE [--truth 12,80,...]``; ``--json`` adds one JSON line of results.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heaters_media import transnet
from heaters_media.errors import InvalidInputError
from heaters_media.frames import (
    FrameGeometry,
    Segment,
    analysis_geometry,
    stream_frames,
)
from heaters_media.probe import probe
from heaters_media.scenes import DEFAULT_ANALYSIS_WIDTH, decode_segments, detect_scenes
from tests.media_factory import f1_score, make_edited_footage

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "bbb_720p_5s.mp4"
PAIRS = (("adaptive", "adaptive"), ("content", "content"))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def plain_decode(path: Path) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path)]
    subprocess.run([*cmd, "-f", "null", "-"], check=True)


@dataclass(frozen=True)
class DecodePlan:
    """What ``detect_scenes`` (default arguments) decodes: segments, geometry, threads each."""

    segments: list[Segment]
    geometry: FrameGeometry
    threads: int


def plan_like_detector(path: Path, width: int = DEFAULT_ANALYSIS_WIDTH) -> DecodePlan:
    """Plan the decode as ``heaters_media.scenes.detect_scenes`` does with its defaults."""
    parallel = min(os.cpu_count() or 1, 8)
    info, segments = decode_segments(path, probe(path, verify=parallel <= 1), parallel)
    threads = max(1, parallel // len(segments)) if len(segments) > 1 else 0
    return DecodePlan(segments, analysis_geometry(info.width, info.height, width), threads)


def matched_decode(path: Path, plan: DecodePlan) -> int:
    """Decode as our detector does (same segments, processes, flags, output); drop the frames."""

    def run(seg: Segment) -> int:
        several = len(plan.segments) > 1
        limit = seg.end - seg.start if several and seg.seek is None else None
        n = 0
        for chunk in stream_frames(
            path,
            plan.geometry,
            fast_decode=True,
            threads=plan.threads,
            seek=seg.seek,
            max_frames=limit,
        ):
            n += len(chunk)
        return n

    if len(plan.segments) == 1:
        return run(plan.segments[0])
    with ThreadPoolExecutor(max_workers=len(plan.segments)) as pool:
        return sum(pool.map(run, plan.segments))


def pyscenedetect(path: Path, kind: str) -> list[int]:
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    detector = AdaptiveDetector() if kind == "adaptive" else ContentDetector()
    scenes = detect(str(path), detector, show_progress=False)
    return [s[0].frame_num for s in scenes[1:]]


def transnet_contenders(
    path: Path, batches: list[int], meta: dict[str, dict[str, Any]]
) -> dict[str, Callable[[], Any]]:
    """TransNetV2 rows (empty without the ml extra): the default call, and per batch size the
    whole call and the network alone on frames decoded beforehand (decode not timed)."""
    try:
        device = transnet.resolve_device("auto")
    except InvalidInputError as exc:
        print(f"transnetv2: skipped ({exc.message})")
        return {}
    model, load_secs = timed(lambda: transnet.load_model(device))
    meta["transnetv2 setup"] = {
        "device": device,
        "model_load_seconds": round(load_secs, 3),
        "default_batch_size": transnet.DEFAULT_BATCH_SIZES[device.split(":")[0]],
        "batch_sizes": batches,
    }
    print(f"transnetv2: device {device}, model loaded before the rounds in {load_secs:.2f} s")

    def whole(batch: int | None = None) -> list[int]:
        result = transnet.detect_transnetv2(path, device=device, batch_size=batch)
        meta[f"transnetv2 batch {result.metadata['batch_size']}"] = result.metadata
        return result.cut_frames

    rows: dict[str, Callable[[], Any]] = {"transnetv2": whole}
    if batches:
        frames = np.concatenate(list(stream_frames(path, transnet.INPUT_GEOMETRY)))

        def alone(batch: int) -> int:
            return len(transnet.predict_frames(model, [frames], batch_size=batch))

        for b in batches:
            rows[f"transnetv2 batch {b}"] = functools.partial(whole, b)
            rows[f"transnetv2 model batch {b}"] = functools.partial(alone, b)
    return rows


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--input", type=Path, help="a video to measure (default: generated 720p edit)")
    ap.add_argument("--truth", help="comma-separated true cut frames of --input, for F1")
    ap.add_argument("--segments", type=int, default=40, help="pieces in the generated edit")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of all contenders; best kept")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON line too")
    ap.add_argument(
        "--transnet-batches",
        default="",
        help="comma-separated TransNetV2 batch sizes to time apart, e.g. 1,4,16",
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-scenes-") as tmp:
        return measure_all(args, Path(tmp))


def measure_all(args: argparse.Namespace, tmp: Path) -> int:
    """Run every contender (generating the input in ``tmp`` unless --input) and report."""
    if args.input:
        path = args.input
        truth = [int(x) for x in args.truth.split(",")] if args.truth else None
    else:
        path, truth = make_edited_footage(tmp / "edit720.mp4", SAMPLE, segments=args.segments)
    info = probe(path)
    frames = info.frame_count
    load_before = _loadavg()
    print(
        f"input: {path} {info.width}x{info.height} {info.video_codec} {frames} frames "
        f"@ {info.fps} fps; true cuts: {len(truth) if truth is not None else 'unknown'}; "
        f"{os.cpu_count()} CPUs; load average {load_before}"
    )

    plan, plan_secs = timed(lambda: plan_like_detector(path))
    for _ in range(args.repeat - 1):
        plan_secs = min(plan_secs, timed(lambda: plan_like_detector(path))[1])
    print(
        f"matched decode: {len(plan.segments)} ffmpeg process(es) side by side, -threads "
        f"{plan.threads}, -skip_loop_filter all, scale to {plan.geometry.width}x"
        f"{plan.geometry.height} (area), rgb24 to a pipe, discarded; planning (probe + packet "
        f"index) {plan_secs:.3f} s"
    )

    rows: dict[str, dict[str, Any]] = {}
    meta: dict[str, dict[str, Any]] = {}

    def heaters(det: str) -> list[int]:
        result = detect_scenes(path, detector=det)
        meta[det] = result.metadata
        return result.cut_frames

    contenders: dict[str, Callable[[], Any]] = {
        "plain decode": lambda: plain_decode(path),
        "matched decode": lambda: matched_decode(path, plan),
    }
    for det in ("adaptive", "content", "histogram"):
        contenders[f"heaters {det}"] = lambda d=det: heaters(d)
    for det in ("content", "adaptive"):
        contenders[f"PySceneDetect {det}"] = lambda d=det: pyscenedetect(path, d)
    batches = [int(b) for b in args.transnet_batches.split(",") if b.strip()]
    contenders.update(transnet_contenders(path, batches, meta))
    # Rounds: every contender once per round, so a change in the machine's load hits them all.
    best = dict.fromkeys(contenders, float("inf"))
    outputs: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name, fn in contenders.items():
            outputs[name], secs = timed(fn)
            best[name] = min(best[name], secs)
    for name, secs in best.items():
        row: dict[str, Any] = {"seconds": round(secs, 3), "fps": round(frames / secs, 1)}
        cuts = outputs[name]
        if truth is not None and isinstance(cuts, list):
            row.update({k: round(float(v), 3) for k, v in f1_score(cuts, truth).items()})
        rows[name] = row
    decoded = outputs["matched decode"]
    load_after = _loadavg()

    # The matched decode must be the decode our detector ran.
    ours = meta["adaptive"]
    same = (
        ours["decode_segments"] == len(plan.segments)
        and decoded == frames
        and (
            ours["analysis_width"],
            ours["analysis_height"],
        )
        == (plan.geometry.width, plan.geometry.height)
    )
    if not same:
        print(
            f"WARNING: matched decode differs from the detector's: {len(plan.segments)} "
            f"segments {plan.geometry} ({decoded} frames) vs {ours['decode_segments']} segments "
            f"{ours['analysis_width']}x{ours['analysis_height']}",
            file=sys.stderr,
        )

    print(f"\n{'contender':26} {'fps':>8} {'seconds':>8} {'F1':>6} {'P':>6} {'R':>6}")
    for name, r in rows.items():
        print(
            f"{name:26} {r['fps']:>8} {r['seconds']:>8} {r.get('f1', '-')!s:>6} "
            f"{r.get('precision', '-')!s:>6} {r.get('recall', '-')!s:>6}"
        )

    def fps(name: str) -> float:
        return float(rows[name]["fps"])

    pairs = []
    ratios: dict[str, float] = {}
    print("\nlike for like (speed ratio = heaters fps / PySceneDetect fps):")
    for ours_name, theirs_name in PAIRS:
        a, b = f"heaters {ours_name}", f"PySceneDetect {theirs_name}"
        ratio = round(fps(a) / fps(b), 2)
        ratios[f"{ours_name}_vs_pyscenedetect_{theirs_name}"] = ratio
        pairs.append(
            {
                "heaters": a,
                "pyscenedetect": b,
                "speed_ratio": ratio,
                "heaters_f1": rows[a].get("f1"),
                "pyscenedetect_f1": rows[b].get("f1"),
            }
        )
        print(
            f"  {a:18} vs {b:24} {ratio:5.2f}x   F1 {rows[a].get('f1', '-')} vs "
            f"{rows[b].get('f1', '-')}"
        )
    print("against the decodes (heaters fps / decode fps):")
    for det in ("adaptive", "content", "histogram"):
        name = f"heaters {det}"
        vs_plain = round(fps(name) / fps("plain decode"), 2)
        vs_matched = round(fps(name) / fps("matched decode"), 2)
        ratios[f"{det}_vs_plain_decode"] = vs_plain
        ratios[f"{det}_vs_matched_decode"] = vs_matched
        print(f"  {name:18} {vs_plain:.0%} of plain decode, {vs_matched:.0%} of matched decode")
    ratios["matched_vs_plain_decode"] = round(fps("matched decode") / fps("plain decode"), 2)
    # Keys of earlier versions (default detector = adaptive), kept for readers of the JSON.
    ratios["vs_pyscenedetect_adaptive"] = ratios["adaptive_vs_pyscenedetect_adaptive"]
    ratios["vs_pyscenedetect_content"] = round(
        fps("heaters adaptive") / fps("PySceneDetect content"), 2
    )
    ratios["vs_plain_decode"] = ratios["adaptive_vs_plain_decode"]
    print(
        f"matched decode is {ratios['matched_vs_plain_decode']:.2f}x plain decode; "
        f"load average before {load_before}, after {load_after}"
    )
    if args.json:
        decode = {
            "processes": len(plan.segments),
            "threads_per_process": plan.threads,
            "analysis_width": plan.geometry.width,
            "analysis_height": plan.geometry.height,
            "planning_seconds": round(plan_secs, 3),
            "frames_decoded": decoded,
            "same_as_detector": same,
        }
        out = {
            "input": str(path),
            "frames": frames,
            "cpus": os.cpu_count(),
            "repeat": args.repeat,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "results": rows,
            "pairs": pairs,
            "ratios": ratios,
            "matched_decode": decode,
            "transnetv2": meta.get("transnetv2 setup"),
        }
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
