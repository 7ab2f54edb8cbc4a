"""Clip splitting speed against one plain re-encode of the whole input, in the same run.

Contenders, each on the same 720p H.264 file, back to back:

- ``split (auto)``: :func:`split_video` over every scene, stream-copying whole-GOP scenes and
  re-encoding the rest (what the pipeline does),
- ``split (encode all)``: the same with stream copy disabled (the worst case: no cut lands on a
  key frame),
- ``reference``: one ``ffmpeg`` re-encode of the whole file with the same encoder settings
  (libx264, same preset/CRF, yuv420p, AAC, faststart) and ffmpeg's default threading.

Results are seconds, seconds per minute of input, and the ratio to the reference.

With no ``--input`` a 720p "edited" file is generated from the bundled Big Buck Bunny shot
(``--minutes`` long), and its true cuts are the scenes. With ``--input`` the file is cut into
``--scene-seconds`` pieces (or the scenes of ``--scenes``, a JSON list / detect-scenes result).

Usage::

    python benchmarks/bench_split.py [--minutes 1] [--input FILE] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from heaters_media.probe import probe  # noqa: E402
from heaters_media.split import split_video  # noqa: E402
from heaters_media.tools import ffmpeg_cmd, run  # noqa: E402

BBB = ROOT / "tests" / "media" / "bbb_720p_5s.mp4"


def generate(path: Path, minutes: float) -> list[dict[str, int]]:
    """A 720p edited file ``minutes`` long (approximately); returns its true scenes."""
    from tests.media_factory import make_edited_footage

    segments = max(2, round(minutes * 60 * 25 / 65))  # pieces average 65 frames
    _, cuts = make_edited_footage(path, BBB, segments=segments, size=(1280, 720))
    total = probe(path).frame_count
    bounds = [0, *cuts, total]
    return [{"start_frame": a, "end_frame": b} for a, b in itertools.pairwise(bounds)]


def fixed_scenes(frame_count: int, fps: float, seconds: float) -> list[dict[str, int]]:
    step = max(1, round(seconds * fps))
    return [
        {"start_frame": s, "end_frame": min(frame_count, s + step)}
        for s in range(0, frame_count, step)
    ]


def reference_encode(path: Path, out: Path, *, crf: int, preset: str, has_audio: bool) -> None:
    args = [
        "-i",
        str(path),
        "-map",
        "0:v:0",
        *(["-map", "0:a:0"] if has_audio else []),
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-pix_fmt",
        "yuv420p",
    ]
    if has_audio:
        args += ["-c:a", "aac", "-b:a", "128k"]
    args += ["-movflags", "+faststart", str(out)]
    run(ffmpeg_cmd(*args), what="reference encode")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0, help="length of the generated input")
    ap.add_argument("--input", type=Path, help="use this video instead of generating one")
    ap.add_argument("--scenes", help="JSON list of scenes (or a file holding it) for --input")
    ap.add_argument(
        "--scene-seconds",
        type=float,
        default=3.0,
        help="fixed scene length for --input without --scenes",
    )
    ap.add_argument("--workers", type=int, default=None, help="split_video worker threads")
    ap.add_argument("--crf", type=int, default=20)
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-split-") as tdir:
        work = Path(tdir)
        if args.input:
            src = args.input
            info = probe(src)
            if args.scenes:
                text = (
                    args.scenes
                    if args.scenes.lstrip().startswith(("[", "{"))
                    else Path(args.scenes).read_text()
                )
                data = json.loads(text)
                scenes = data["scenes"] if isinstance(data, dict) else data
            else:
                scenes = fixed_scenes(info.frame_count, info.fps, args.scene_seconds)
        else:
            src = work / "input_720p.mp4"
            t0 = time.monotonic()
            scenes = generate(src, args.minutes)
            if not args.json:
                print(f"generated {src.name} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
            info = probe(src)
        minutes = info.duration / 60

        rows = []

        def measure(name: str, fn) -> float:  # type: ignore[no-untyped-def]
            t0 = time.monotonic()
            extra = fn()
            secs = time.monotonic() - t0
            rows.append(
                {
                    "name": name,
                    "seconds": round(secs, 3),
                    "seconds_per_minute": round(secs / minutes, 3),
                    **(extra or {}),
                }
            )
            return secs

        ref = measure(
            "reference (one full re-encode)",
            lambda: (
                reference_encode(
                    src,
                    work / "reference.mp4",
                    crf=args.crf,
                    preset=args.preset,
                    has_audio=info.has_audio,
                )
                or {}
            ),
        )

        def split(allow_copy: bool, folder: str):  # type: ignore[no-untyped-def]
            def go() -> dict[str, int]:
                r = split_video(
                    src,
                    scenes,
                    work / folder,
                    crf=args.crf,
                    preset=args.preset,
                    workers=args.workers,
                    allow_copy=allow_copy,
                )
                return {"copied": r.copied, "encoded": r.encoded}

            return go

        measure("split (auto: copy where possible)", split(True, "auto"))
        measure("split (encode all)", split(False, "encode"))
        for row in rows:
            row["ratio_to_reference"] = round(row["seconds"] / ref, 3)

    result = {
        "input": str(args.input or "generated 720p edited footage"),
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "frames": info.frame_count,
        "minutes": round(minutes, 3),
        "scenes": len(scenes),
        "cpus": os.cpu_count(),
        "preset": args.preset,
        "crf": args.crf,
        "results": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"input: {result['input']} {info.width}x{info.height} @ {info.fps:g} fps, "
        f"{info.frame_count} frames ({minutes:.2f} min), {len(scenes)} scenes, "
        f"{result['cpus']} CPUs, libx264 {args.preset} crf {args.crf}"
    )
    print(f"{'contender':36} {'seconds':>9} {'s/min input':>12} {'x reference':>12}  clips")
    for row in rows:
        clips = f"{row['copied']} copied, {row['encoded']} encoded" if "copied" in row else ""
        print(
            f"{row['name']:36} {row['seconds']:9.2f} {row['seconds_per_minute']:12.2f} "
            f"{row['ratio_to_reference']:12.2f}  {clips}"
        )


if __name__ == "__main__":
    main()
