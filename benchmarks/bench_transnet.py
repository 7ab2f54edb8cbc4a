"""TransNetV2's network through our batched path: frames/s per batch size and precision.

Why a bench of its own next to ``bench_scenes``: on a GPU the network is fast enough that the
decode decides the end-to-end rate, so the network's own rate (what batching buys) and the
fp16 question (issue 11: fp16 only where results stay equal) are measured on frames decoded
beforehand. ``bench_scenes --transnet-batches`` gives the whole call (decode included).

Frames: the bundled sample (an edit of Big Buck Bunny, (c) Blender Foundation, CC BY 3.0)
decoded once to 48x27 by :func:`heaters_media.frames.stream_frames` (ffmpeg), or by OpenCV
where a GPU image has no ffmpeg (said in the output), repeated to ``--frames``.

For each batch size and precision: the best of ``--repeat`` runs of
:func:`heaters_media.transnet.predict_frames` after a warm-up, and for fp16 the largest
difference of its per-frame probabilities from fp32 and whether the cuts
(:func:`cuts_from_predictions` at the default threshold) are the same. Usage::

    python -m benchmarks.bench_transnet [--device auto] [--frames 3000] [--batches 1,4,16]
        [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any

import cv2
import numpy as np

from heaters_media import transnet
from heaters_media.frames import stream_frames
from heaters_media.samples import SAMPLE_VIDEO


def sample_frames(count: int) -> tuple[np.ndarray, str]:
    """``count`` 48x27 RGB frames of the sample (repeated), and how they were decoded."""
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        frames = np.concatenate(list(stream_frames(SAMPLE_VIDEO, transnet.INPUT_GEOMETRY)))
        how = "ffmpeg (stream_frames)"
    else:
        cap, out = cv2.VideoCapture(str(SAMPLE_VIDEO)), []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            small = cv2.resize(frame, (48, 27), interpolation=cv2.INTER_AREA)
            out.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        cap.release()
        frames, how = np.stack(out), "OpenCV (no ffmpeg on this machine)"
    reps = -(-count // len(frames))
    return np.concatenate([frames] * reps)[:count], how


def rate(model: Any, frames: np.ndarray, batch: int, precision: str, repeats: int) -> float:
    """Best frames/s of ``repeats`` runs after one warm-up."""
    transnet.predict_frames(model, [frames[:300]], batch_size=batch, precision=precision)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        transnet.predict_frames(model, [frames], batch_size=batch, precision=precision)
        best = min(best, time.perf_counter() - t0)
    return len(frames) / best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--batches", default="1,4,16", help="windows per forward pass")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs (shared machines)")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    device = transnet.resolve_device(args.device)
    torch, _ = transnet.import_transnet()
    model = transnet.load_model(device)
    frames, how = sample_frames(args.frames)
    precisions = ["fp32", "fp16"] if device.startswith("cuda") else ["fp32"]
    reference = transnet.predict_frames(model, [frames], batch_size=4)
    ref_cuts = transnet.cuts_from_predictions(reference, transnet.DEFAULT_THRESHOLD)[0]
    rows: dict[str, Any] = {}
    for batch in (int(b) for b in args.batches.split(",") if b.strip()):
        for precision in precisions:
            row: dict[str, Any] = {
                "frames_per_second": rate(model, frames, batch, precision, args.repeat)
            }
            probs = transnet.predict_frames(model, [frames], batch_size=batch, precision=precision)
            cuts = transnet.cuts_from_predictions(probs, transnet.DEFAULT_THRESHOLD)[0]
            row["max_probability_difference"] = float(np.abs(probs - reference).max())
            row["same_cuts"] = bool(np.array_equal(cuts, ref_cuts))
            rows[f"batch {batch} {precision}"] = row
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"{os.cpu_count()} CPUs"
    load_after = os.getloadavg()
    print(
        f"load average before: {', '.join(f'{x:.1f}' for x in load_before)}, after: "
        f"{', '.join(f'{x:.1f}' for x in load_after)}: other work on the machine skews these"
    )
    print(
        f"TransNetV2 network on {name} ({device}), {len(frames)} frames 48x27 decoded by {how}, "
        f"best of {args.repeat}; {len(ref_cuts)} cuts at batch 4 fp32 (the reference)\n"
    )
    print(f"{'windows per pass, precision':<30}{'frames/s':>10}{'max |p - ref|':>15}  same cuts")
    for label, row in rows.items():
        print(
            f"{label:<30}{row['frames_per_second']:>10.0f}"
            f"{row['max_probability_difference']:>15.2e}  {row['same_cuts']}"
        )
    print("\ncommand: python -m benchmarks.bench_transnet " + " ".join(sys.argv[1:]))
    result = {
        "device": name,
        "frames": len(frames),
        "decoded_by": how,
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
