"""Scene detection: speed and accuracy against PySceneDetect and a plain ffmpeg decode.

One run, one file, every contender measured back to back:

- plain ``ffmpeg -i FILE -f null -`` decode (the physical limit of any detector that looks at
  every frame),
- our detectors (default ``adaptive``, plus ``content`` and ``histogram``),
- PySceneDetect 0.7's ContentDetector and AdaptiveDetector (their defaults, auto downscale).

With no ``--input``, a 720p "edited" file is generated from the bundled Big Buck Bunny shot
(pieces of the shot with different looks, concatenated), so the true cuts are known and
F1 (1-frame tolerance) is reported too. Usage::

    python -m benchmarks.bench_scenes [--segments 40] [--input FILE --truth 12,80,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heaters_media.probe import probe
from heaters_media.scenes import detect_scenes
from tests.media_factory import f1_score, make_edited_footage

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "media" / "bbb_720p_5s.mp4"


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def plain_decode(path: Path) -> None:
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-i",
            str(path),
            "-f",
            "null",
            "-",
        ],
        check=True,
    )


def pyscenedetect(path: Path, kind: str) -> list[int]:
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    detector = AdaptiveDetector() if kind == "adaptive" else ContentDetector()
    scenes = detect(str(path), detector, show_progress=False)
    return [s[0].frame_num for s in scenes[1:]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--input", type=Path, help="a video to measure (default: generated 720p edit)")
    ap.add_argument("--truth", help="comma-separated true cut frames of --input, for F1")
    ap.add_argument("--segments", type=int, default=40, help="pieces in the generated edit")
    ap.add_argument("--repeat", type=int, default=2, help="runs per contender; best is kept")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-scenes-"))
    if args.input:
        path = args.input
        truth = [int(x) for x in args.truth.split(",")] if args.truth else None
    else:
        path, truth = make_edited_footage(tmp / "edit720.mp4", SAMPLE, segments=args.segments)
    info = probe(path)
    frames = info.frame_count
    print(
        f"input: {path} {info.width}x{info.height} {info.video_codec} {frames} frames "
        f"@ {info.fps} fps; true cuts: {len(truth) if truth is not None else 'unknown'}"
    )

    rows: dict[str, dict[str, float | None]] = {}

    def measure(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        best, cuts = float("inf"), None
        for _ in range(args.repeat):
            cuts, secs = timed(fn)
            best = min(best, secs)
        row: dict[str, float | None] = {"seconds": round(best, 3), "fps": round(frames / best, 1)}
        if truth is not None and cuts is not None:
            row.update({k: round(float(v), 3) for k, v in f1_score(cuts, truth).items()})
        rows[name] = row

    measure("ffmpeg plain decode", lambda: plain_decode(path))
    for det in ("adaptive", "content", "histogram"):
        measure(f"heaters {det}", lambda d=det: detect_scenes(path, detector=d).cut_frames)
    for det in ("content", "adaptive"):
        measure(f"PySceneDetect {det}", lambda d=det: pyscenedetect(path, d))

    print(f"{'contender':28} {'fps':>8} {'seconds':>8} {'F1':>6} {'P':>6} {'R':>6}")
    for name, r in rows.items():
        print(
            f"{name:28} {r['fps']:>8} {r['seconds']:>8} {r.get('f1', '-')!s:>6} "
            f"{r.get('precision', '-')!s:>6} {r.get('recall', '-')!s:>6}"
        )
    ours = rows["heaters adaptive"]["fps"] or 0.0
    ratios = {
        "vs_pyscenedetect_content": round(ours / rows["PySceneDetect content"]["fps"], 2),
        "vs_pyscenedetect_adaptive": round(ours / rows["PySceneDetect adaptive"]["fps"], 2),
        "vs_plain_decode": round(ours / rows["ffmpeg plain decode"]["fps"], 2),
    }
    print(
        f"default detector speed: {ratios['vs_pyscenedetect_content']}x PySceneDetect "
        f"ContentDetector (target >= 1.5), {ratios['vs_pyscenedetect_adaptive']}x "
        f"AdaptiveDetector, {ratios['vs_plain_decode']:.0%} of plain decode (target >= 80%)"
    )
    if args.json:
        print(json.dumps({"input": str(path), "frames": frames, "results": rows, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
