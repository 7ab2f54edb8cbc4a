"""Image embedding throughput (images/s) on CPU for batch sizes 1, 8 and 32.

Contenders, each through the real ``embed_images`` path (decode + preprocess + model):

- ``heaters/pixels-v1`` (weights-free descriptor); reference: a bare full-size OpenCV JPEG
  decode of the same files (what any image model has to pay at least),
- CLIP ViT-B/32; reference: the model's forward pass alone on already-preprocessed tensors
  of the same batch size (so the ratio shows what decode + preprocessing cost on top).

No weights are downloaded. Without ``--model``, CLIP is a *randomly initialized* model with the
real ViT-B/32 vision architecture (CLIPVisionConfig defaults: hidden 768, 12 layers, patch 32,
224 px; a tiny text tower, which image embedding never runs): its speed is that of the real
model, its vectors are meaningless. ``--model PATH`` uses real weights from a save_pretrained
folder (or a hub id already in the Hugging Face cache).

Frames: 64 JPEGs (640x360) extracted from the bundled Big Buck Bunny edit. Usage::

    python -m benchmarks.bench_embed [--images 64] [--batch-sizes 1,8,32] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from heaters_media.embed import embed_images
from heaters_media.samples import SAMPLE_VIDEO


def extract_frames(out: Path, count: int) -> list[Path]:
    fps = count / 21.0  # the sample is 21.4 s long
    subprocess.run(
        [
            *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
            *("-i", str(SAMPLE_VIDEO), "-vf", f"fps={fps:.4f}", "-frames:v", str(count)),
            *("-q:v", "3", str(out / "f%03d.jpg")),
        ],
        check=True,
    )
    return sorted(out.glob("f*.jpg"))


def best_of(fn: Callable[[], object], repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def random_vit_b32(folder: Path) -> Path:
    """Write a randomly initialized CLIP with the ViT-B/32 image tower (+ its preprocessor)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
    config = tf.CLIPConfig(text_config=text, vision_config={}, projection_dim=512)
    tf.CLIPModel(config).save_pretrained(folder)
    tf.CLIPImageProcessor().save_pretrained(folder)  # defaults = openai's 224 px preprocessing
    return folder


def fastest(kw: dict[str, Any], frames: list[Path], repeats: int) -> float:
    """Best images/s of ``repeats`` full runs, after a warm-up batch (oneDNN kernel set-up)."""
    embed_images(frames[: kw["batch_size"]], **kw)
    return max(embed_images(frames, **kw).images_per_second for _ in range(repeats))


def forward_only(
    model: str, path: str | None, frames: list[Path], batch: int, repeats: int
) -> float:
    """images/s of the model's forward pass alone on preprocessed tensors."""
    import torch

    from heaters_media import embed_models
    from heaters_media.descriptor import read_image_rgb

    spec = embed_models.resolve_model(model, path)
    loaded = embed_models.load_model(spec, "cpu", "float32", True)
    rgb = [read_image_rgb(p) for p in frames[:batch]]
    pixels = loaded.processor(images=rgb, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        loaded.model.get_image_features(pixel_values=pixels)
        per_call = best_of(lambda: loaded.model.get_image_features(pixel_values=pixels), repeats)
    return len(rgb) / per_call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=2, help="best of N runs (shared machines)")
    ap.add_argument("--model", help="real CLIP weights: save_pretrained folder or cached hub id")
    args = ap.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]

    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows: list[tuple[str, int, float, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        frames = extract_frames(Path(tmp), args.images)
        n = len(frames)
        blobs = [np.fromfile(p, np.uint8) for p in frames]
        decode = n / best_of(lambda: [cv2.imdecode(b, cv2.IMREAD_COLOR) for b in blobs])

        for bs in sizes:
            ips = fastest(dict(model="heaters/pixels-v1", batch_size=bs), frames, args.repeats)
            rows.append(("heaters/pixels-v1", bs, ips, "full decode", decode))

        if args.model:
            label, clip_path, weights = args.model, None, "real weights"
            if Path(args.model).is_dir():
                label, clip_path = "clip (" + Path(args.model).name + ")", args.model
        else:
            clip_path = str(random_vit_b32(Path(tmp) / "vit-b32-random"))
            label, weights = "clip-vit-b32 (random)", "RANDOM weights (speed only)"
        kw: dict[str, Any] = dict(model=label if clip_path else args.model, model_path=clip_path)
        kw.update(device="cpu", offline=True)
        first = embed_images(frames[:1], **kw)  # load once; later calls hit the cache
        for bs in sizes:
            ips = fastest({**kw, "batch_size": bs}, frames, args.repeats)
            ref = forward_only(str(kw["model"]), clip_path, frames, bs, args.repeats)
            rows.append((label, bs, ips, "forward only", ref))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nload average (1/5/15 min) before: {load_before}, after: {load}, "
        f"{os.cpu_count()} CPUs: other work on the machine skews these timings"
    )
    print(
        f"{n} frames 640x360 JPEG, CPU, torch threads={_threads()}; CLIP: {weights}, "
        f"dim {first.dimension}, load {first.load_seconds:.1f} s"
    )
    print(
        f"{'model':<26}{'batch':>6}{'images/s':>11}{'ms/img':>9}  {'reference':<14}"
        f"{'ref img/s':>10}{'ratio':>8}"
    )
    for model, bs, ips, ref_name, ref in rows:
        print(
            f"{model:<26}{bs:>6}{ips:>11.1f}{1000 / ips:>9.2f}  {ref_name:<14}"
            f"{ref:>10.1f}{ips / ref:>8.2f}"
        )
    print("\ncommand: python -m benchmarks.bench_embed " + " ".join(sys.argv[1:]))


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    main()
