"""Clip splitting speed against one plain decode and one x264 re-encode, in the same run.

Splitting is nearly free where a scene is whole GOPs (stream copy) and costs a re-encode of the
scene otherwise, so its speed depends on where the input's key frames are. With no ``--input``
two 720p H.264 "edited" files are generated from the bundled Big Buck Bunny shot (``--minutes``
long, pieces of ~65 frames with different looks), holding the same pieces, so the same cuts:

- ``friendly``: x264 places key frames itself and puts one on most cuts, so most scenes are
  whole GOPs and are stream-copied (as in an x264 export with default settings),
- ``unfriendly``: a fixed GOP (``-g N -keyint_min N -sc_threshold 0``, N >= 250 chosen so that
  no cut is a multiple of N): key frames only every N frames, none on a cut, so every scene is
  re-encoded, decoding from the key frame before it (as in footage whose encoder keeps a fixed
  key-frame interval, e.g. many cameras and streaming re-encodes: cuts rarely hit key frames).

For each input ffprobe's packet flags give the key frames and the number of cuts that fall on
one. Contenders on each input, back to back, in ``--repeat`` rounds (each round runs every
contender once; the best time of each is kept):

- ``plain decode``: ``ffmpeg -i FILE -f null -`` (one process, ffmpeg's default threading),
- ``reference``: one ``ffmpeg`` re-encode of the whole file with the clips' encoder settings
  (libx264, same preset/CRF, yuv420p, AAC, faststart) and ffmpeg's default threading,
- ``split (auto)``: :func:`split_video` over every scene, stream-copying whole-GOP scenes and
  re-encoding the rest (what the pipeline does),
- ``split (encode all)``: the same with stream copy disabled.

Each row gives seconds, seconds per minute of input, clips copied / re-encoded, and its ratio
to the plain decode and to the reference of the same input. With ``--input`` that file alone is
measured, cut into ``--scene-seconds`` pieces (or the scenes of ``--scenes``, a JSON list or a
detect-scenes result). The README figures come from::

    .venv/bin/python -m benchmarks.bench_split        # --minutes 1 --repeat 2

``--json`` prints one JSON object instead of the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from heaters_media.probe import packet_index, probe  # noqa: E402
from heaters_media.split import split_video  # noqa: E402
from heaters_media.tools import ffmpeg_cmd, run  # noqa: E402

BBB = ROOT / "tests" / "data" / "bbb_720p_5s.mp4"
MIN_GOP = 250

Scenes = list[dict[str, int]]


def _scenes_from_cuts(cuts: list[int], total: int) -> Scenes:
    bounds = [0, *cuts, total]
    return [{"start_frame": a, "end_frame": b} for a, b in itertools.pairwise(bounds)]


def fixed_gop_avoiding(cuts: list[int], minimum: int = MIN_GOP) -> int:
    """The smallest key-frame interval >= ``minimum`` that puts no key frame on a cut."""
    gop = minimum
    while any(c % gop == 0 for c in cuts):
        gop += 1
    return gop


def generate(work: Path, minutes: float) -> tuple[Path, Path, Scenes, int]:
    """The friendly and unfriendly 720p edits (same pieces), their true scenes, the fixed GOP."""
    from tests.media_factory import make_edited_footage

    segments = max(2, round(minutes * 60 * 25 / 65))  # pieces average 65 frames
    friendly, cuts = make_edited_footage(
        work / "friendly_720p.mp4", BBB, segments=segments, size=(1280, 720)
    )
    gop = fixed_gop_avoiding(cuts)
    unfriendly, cuts2 = make_edited_footage(
        work / "unfriendly_720p.mp4", BBB, segments=segments, size=(1280, 720), gop=gop
    )
    assert cuts2 == cuts
    total = probe(friendly).frame_count
    if probe(unfriendly).frame_count != total:
        raise SystemExit("the friendly and unfriendly inputs differ in frame count")
    return friendly, unfriendly, _scenes_from_cuts(cuts, total), gop


def fixed_scenes(frame_count: int, fps: float, seconds: float) -> Scenes:
    step = max(1, round(seconds * fps))
    return [
        {"start_frame": s, "end_frame": min(frame_count, s + step)}
        for s in range(0, frame_count, step)
    ]


def keyframe_report(path: Path, scenes: Scenes) -> dict[str, int]:
    """Key frames of ``path`` (ffprobe packet flags), how many cuts fall on one, and how many
    scenes are whole GOPs (start on a key frame, end on one or at the end: copyable)."""
    index = packet_index(path)
    keys = set(index.keyframes)
    cuts = [s["start_frame"] for s in scenes[1:]]
    ends = keys | {index.count}
    whole = sum(1 for s in scenes if s["start_frame"] in keys and s["end_frame"] in ends)
    return {
        "keyframes": len(keys),
        "cuts": len(cuts),
        "cuts_on_keyframes": sum(1 for c in cuts if c in keys),
        "scenes_of_whole_gops": whole,
    }


def plain_decode(path: Path) -> None:
    run(ffmpeg_cmd("-i", str(path), "-f", "null", "-"), what="plain decode")


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


DECODE = "plain decode"
REFERENCE = "reference (one full re-encode)"
AUTO = "split (auto: copy where possible)"
ENCODE_ALL = "split (encode all)"


def measure_input(
    label: str, src: Path, scenes: Scenes, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Every contender on one input, in ``args.repeat`` rounds; the best time of each."""
    info = probe(src)
    minutes = info.duration / 60

    def split(allow_copy: bool) -> Callable[[Path], dict[str, int]]:
        def go(out: Path) -> dict[str, int]:
            r = split_video(
                src,
                scenes,
                out,
                crf=args.crf,
                preset=args.preset,
                workers=args.workers,
                allow_copy=allow_copy,
            )
            return {"clips": len(r.clips), "copied": r.copied, "encoded": r.encoded}

        return go

    contenders: dict[str, Callable[[Path], dict[str, int] | None]] = {
        DECODE: lambda out: plain_decode(src),
        REFERENCE: lambda out: reference_encode(
            src, out / "reference.mp4", crf=args.crf, preset=args.preset, has_audio=info.has_audio
        ),
        AUTO: split(True),
        ENCODE_ALL: split(False),
    }
    # Rounds: every contender once per round, so a change in the machine's load hits them all.
    best = dict.fromkeys(contenders, float("inf"))
    extra: dict[str, dict[str, int] | None] = {}
    for k in range(args.repeat):
        for i, (name, fn) in enumerate(contenders.items()):
            out = work / f"{label}-{i}-{k}"
            out.mkdir()
            t0 = time.perf_counter()
            extra[name] = fn(out)
            best[name] = min(best[name], time.perf_counter() - t0)
            shutil.rmtree(out, ignore_errors=True)
    rows = [
        {
            "name": name,
            "seconds": round(secs, 3),
            "seconds_per_minute": round(secs / minutes, 3),
            **(extra[name] or {}),
        }
        for name, secs in best.items()
    ]
    seconds = {row["name"]: row["seconds"] for row in rows}
    for row in rows:
        row["ratio_to_decode"] = round(row["seconds"] / seconds[DECODE], 3)
        row["ratio_to_reference"] = round(row["seconds"] / seconds[REFERENCE], 3)
    return {
        "name": label,
        "path": str(src),
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "frames": info.frame_count,
        "minutes": round(minutes, 3),
        "scenes": len(scenes),
        **keyframe_report(src, scenes),
        "results": rows,
    }


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--minutes", type=float, default=1.0, help="length of each generated input (default 1)"
    )
    ap.add_argument("--input", type=Path, help="measure this video instead of generated ones")
    ap.add_argument("--scenes", help="JSON list of scenes (or a file holding it) for --input")
    ap.add_argument(
        "--scene-seconds",
        type=float,
        default=3.0,
        help="fixed scene length for --input without --scenes",
    )
    ap.add_argument("--workers", type=int, default=None, help="split_video worker threads")
    ap.add_argument("--crf", type=int, default=20, help="x264 CRF of the clips and the reference")
    ap.add_argument("--preset", default="veryfast", help="x264 preset of clips and reference")
    ap.add_argument(
        "--repeat", type=int, default=2, help="rounds of all contenders; each one's best is kept"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args(argv)

    load_before = _loadavg()
    gop = None
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tdir:
        work = Path(tdir)
        if args.input:
            info = probe(args.input)
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
            inputs = [measure_input("input", args.input, scenes, work, args)]
        else:
            t0 = time.perf_counter()
            friendly, unfriendly, scenes, gop = generate(work, args.minutes)
            if not args.json:
                print(
                    f"generated two {args.minutes:g}-min inputs in {time.perf_counter() - t0:.1f}"
                    f" s (unfriendly: fixed GOP {gop})",
                    flush=True,
                )
            inputs = [
                measure_input("friendly", friendly, scenes, work, args),
                measure_input("unfriendly", unfriendly, scenes, work, args),
            ]

    result = {
        "cpus": os.cpu_count(),
        "preset": args.preset,
        "crf": args.crf,
        "repeat": args.repeat,
        "unfriendly_gop": gop,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "inputs": inputs,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['cpus']} CPUs, libx264 {args.preset} crf {args.crf}, best of {args.repeat}; "
        f"load average before {load_before}, after {result['loadavg_after']}"
    )
    for inp in inputs:
        print(
            f"\n{inp['name']}: {inp['path']} {inp['width']}x{inp['height']} @ {inp['fps']:g} "
            f"fps, {inp['frames']} frames ({inp['minutes']:.2f} min), {inp['scenes']} scenes; "
            f"{inp['keyframes']} key frames, {inp['cuts_on_keyframes']} of {inp['cuts']} cuts "
            f"on a key frame, {inp['scenes_of_whole_gops']} scenes of whole GOPs"
        )
        print(f"{'contender':36} {'seconds':>8} {'s/min':>7} {'x decode':>9} {'x ref':>6}  clips")
        for row in inp["results"]:
            clips = f"{row['copied']} copied, {row['encoded']} encoded" if "copied" in row else ""
            print(
                f"{row['name']:36} {row['seconds']:8.2f} {row['seconds_per_minute']:7.2f} "
                f"{row['ratio_to_decode']:9.2f} {row['ratio_to_reference']:6.2f}  {clips}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
