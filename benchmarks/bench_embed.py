"""Embedding throughput (images/s) on the CPU or a CUDA GPU: the feed alone, models end to end.

Why two tables: a model's rate end to end is the slower of its feed (decode + preprocess) and
its forward pass, so each is measured on its own next to the other.

1. **Feed alone**: 640x360 JPEGs through :func:`heaters_media.embed_feed.batches` into a no-op
   (the model costs nothing), with each real processor's settings (CLIP ViT-B/32: shortest edge
   224, crop 224; DINOv2: 256, crop 224) and the tiny test models' (32 px). References: the
   path before the feed (one thread: OpenCV decode, then the Hugging Face processor per batch)
   and a bare full-size OpenCV decode in as many threads as the feed has (the floor).
2. **End to end**: each model through ``embed_images`` (feed + model; model load excluded) next
   to its forward pass alone on already-preprocessed tensors of the same batch size, and
   **from frames**: the same frames handed over decoded (``FrameEmbedder``, as the media
   engine's pass gives them to ``pipeline --embed`` and the review descriptor; no JPEG). Models:
   the tiny random CLIP and DINOv2 of the tests (32 px: the feed dominates), and a randomly
   initialized CLIP with the real ViT-B/32 image tower (``vit-b32``: the model dominates on a
   CPU; its vectors are meaningless, its speed is the real model's). No weights are
   downloaded.

On a GPU (``--device cuda``): fp16 models, the feed into the GPU both ways (CPU workers with
uint8 rows copied to the device, and nvJPEG ``decode_jpeg`` on the GPU), and the real-size
architectures ``vit-b32``, ``dinov2-small`` and ``dinov2-base`` (random weights: the same
arithmetic as the published checkpoints, which cannot be downloaded here).

Frames: extracted from the bundled sample (an edit of Big Buck Bunny, (c) Blender Foundation,
CC BY 3.0). Each figure is the best of ``--repeat`` runs after a warm-up; the load average is
printed before and after, since other work on the machine skews the timings. Usage::

    python -m benchmarks.bench_embed [--images 256] [--batch-size 32] [--repeat 3]
        [--models tiny-clip,tiny-dinov2,vit-b32] [--vit-images 64] [--workers N] [--json]
    python -m benchmarks.bench_embed --device cuda --images 4096 --batch-size 256 \
        --models vit-b32,dinov2-small,dinov2-base
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from heaters_media import descriptor, embed_feed, embed_models
from heaters_media.embed import embed_images
from heaters_media.embed_frames import FrameEmbedder
from heaters_media.embed_preprocess import Preprocess
from heaters_media.samples import SAMPLE_VIDEO

MODELS = ("tiny-clip", "tiny-dinov2", "vit-b32", "dinov2-small", "dinov2-base")
#: Real-size architectures: on a CPU their forward pass dominates, so they get fewer frames.
LARGE = {"vit-b32", "dinov2-small", "dinov2-base"}
#: Distinct frames at most; more images are copies of them (same decode work, a smaller sample).
UNIQUE = 512


def extract_frames(out: Path, count: int) -> list[Path]:
    """``count`` JPEG files: up to UNIQUE frames of the sample, the rest copies of them."""
    unique = min(count, UNIQUE)
    fps = unique / 21.0  # the sample is 21.4 s long
    if shutil.which("ffmpeg"):
        subprocess.run(
            [
                *("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"),
                *("-i", str(SAMPLE_VIDEO), "-vf", f"fps={fps:.4f}", "-frames:v", str(unique)),
                *("-q:v", "3", str(out / "f%05d.jpg")),
            ],
            check=True,
        )
    else:  # a GPU image without ffmpeg: OpenCV's own decoder, every n-th frame
        cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        step, i, kept = max(1, total // unique), 0, 0
        while kept < unique:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == 0:
                kept += 1
                cv2.imwrite(str(out / f"f{kept:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            i += 1
        cap.release()
    frames = sorted(out.glob("f*.jpg"))
    for n in range(len(frames), count):
        target = out / f"f{n + 1:05d}.jpg"
        shutil.copyfile(frames[n % unique], target)
    return sorted(out.glob("f*.jpg"))[:count]


def best_rate(n: int, fn: Callable[[], object], repeats: int) -> float:
    """Best images/s of ``repeats`` runs of ``fn`` (``n`` images each), after one warm-up."""
    return float(measure(n, fn, repeats)["images_per_second"])


def measure(n: int, fn: Callable[[], object], repeats: int, threads: int = 0) -> dict[str, float]:
    """Best wall-clock images/s, and the least CPU time (all threads) per image, of ``repeats``
    runs after one warm-up. On a shared machine the wall clock counts other jobs' time; the
    CPU time mostly does not, so ``min(cores, threads) / cpu time`` is what the cores would
    give if free (``threads`` 0: as many as there are cores)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    cpu_ms = 1000 * min(cpus) / n
    cores = os.cpu_count() or 1
    return {
        "images_per_second": n / min(walls),
        "cpu_ms_per_image": cpu_ms,
        "free_cores_images_per_second": 1000 * min(cores, threads or cores) / cpu_ms,
    }


def build_models(root: Path, names: list[str]) -> dict[str, Path]:
    """save_pretrained folders: the tests' tiny models and a random ViT-B/32 CLIP."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    out: dict[str, Path] = {}
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    text = dict(vocab_size=64, max_position_embeddings=16, **vision)
    if "tiny-clip" in names:
        config = tf.CLIPConfig(
            text_config=text, vision_config={**vision, "image_size": 32, "patch_size": 8}
        )
        tf.CLIPModel(config).save_pretrained(root / "tiny-clip")
        tf.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ).save_pretrained(root / "tiny-clip")
        out["tiny-clip"] = root / "tiny-clip"
    if "tiny-dinov2" in names:
        dino = tf.Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
        )
        tf.Dinov2Model(dino).save_pretrained(root / "tiny-dinov2")
        _dino_processor(36, 32).save_pretrained(root / "tiny-dinov2")
        out["tiny-dinov2"] = root / "tiny-dinov2"
    if "vit-b32" in names:  # CLIPVisionConfig defaults = ViT-B/32 (768 wide, 12 layers, 224 px)
        small_text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1)
        config = tf.CLIPConfig(text_config=small_text, vision_config={}, projection_dim=512)
        tf.CLIPModel(config).save_pretrained(root / "vit-b32")
        tf.CLIPImageProcessor().save_pretrained(root / "vit-b32")  # openai's 224 px settings
        out["vit-b32"] = root / "vit-b32"
    # facebook/dinov2-small and -base: ViT-S/14 and ViT-B/14 (Dinov2Config defaults: base)
    for name, width, heads in (("dinov2-small", 384, 6), ("dinov2-base", 768, 12)):
        if name in names:
            dino = tf.Dinov2Config(hidden_size=width, num_attention_heads=heads, image_size=518)
            tf.Dinov2Model(dino).save_pretrained(root / name)
            _dino_processor(256, 224).save_pretrained(root / name)
            out[name] = root / name
    return out


def _dino_processor(short: int, crop: int) -> Any:
    import transformers as tf

    return tf.BitImageProcessor(
        size={"shortest_edge": short},
        crop_size={"height": crop, "width": crop},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def feed_rows(
    frames: list[Path], batch: int, workers: int, repeats: int, device: str = "cpu"
) -> dict[str, Any]:
    """The feed into a no-op, per processor setting, and the two references. On CUDA the
    no-op is the batch on the GPU in fp16, by each of the two stages that reach it."""
    import torch
    import transformers as tf

    from heaters_media.embed_gpu import GpuJpegStage, torchvision_decoder

    n = len(frames)
    cuda = device.startswith("cuda")
    decoder = torchvision_decoder() if cuda else None
    processors = {
        "CLIP ViT-B/32 (224)": tf.CLIPImageProcessor(),
        "DINOv2 (256 -> 224)": _dino_processor(256, 224),
        "tiny CLIP (32)": tf.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        "tiny DINOv2 (36 -> 32)": _dino_processor(36, 32),
    }
    rows: dict[str, Any] = {}
    dtype = torch.float16 if cuda else torch.float32
    if cuda:  # a GPU runs the real-size models only
        processors = {k: v for k, v in processors.items() if "tiny" not in k}
    for name, processor in processors.items():
        prep = Preprocess.from_processor(processor)
        stages: dict[str, embed_feed.Stage] = {"": embed_feed.HostStage(prep, device, dtype)}
        if decoder is not None:
            stages[" nvJPEG"] = GpuJpegStage(prep, device, dtype, decoder)
        for label, stage in stages.items():

            def run(stage: embed_feed.Stage = stage) -> None:
                for b in embed_feed.batches(frames, stage, batch, workers=workers):
                    _ = b.data  # the negligible model
                if cuda:
                    torch.cuda.synchronize()

            rows[f"feed{label}: {name}"] = measure(n, run, repeats, threads=workers)

    clip = processors["CLIP ViT-B/32 (224)"]

    some = frames[:UNIQUE]  # one thread is slow: a per-image rate needs no more

    def before() -> None:  # what embed_images did before the feed, per batch
        for i in range(0, len(some), batch):
            rgb = [descriptor.read_image_rgb(p) for p in some[i : i + batch]]
            clip(images=rgb, return_tensors="pt")

    rows["before: 1 thread, HF processor (CLIP 224)"] = measure(
        len(some), before, repeats, threads=1
    )
    blobs = [np.fromfile(p, np.uint8) for p in frames]

    def decode_only() -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda b: cv2.imdecode(b, cv2.IMREAD_COLOR_RGB), blobs))

    rows[f"floor: full decode only, {workers} threads"] = measure(
        n, decode_only, repeats, threads=workers
    )
    return rows


def forward_only(
    folder: Path, frames: list[Path], batch: int, repeats: int, device: str = "cpu"
) -> float:
    """images/s of the model's forward pass alone on preprocessed tensors of one batch, already
    on the device (fp16 on CUDA, as ``embed_images`` loads it), vectors back on the host."""
    dtype = "float16" if device.startswith("cuda") else "float32"
    loaded = embed_models.load_model(embed_models.resolve_model(str(folder)), device, dtype, True)
    rgb = [descriptor.read_image_rgb(p) for p in frames[:batch]]
    pixels = loaded.processor(images=rgb, return_tensors="pt")["pixel_values"]
    pixels = pixels.to(device=device, dtype=loaded.model.dtype)
    return best_rate(len(rgb), lambda: loaded.embed_pixels(pixels), repeats)


def end_to_end(
    name: str,
    folder: Path,
    frames: list[Path],
    batch: int,
    workers: int,
    repeats: int,
    device: str = "cpu",
    decode: str = "auto",
) -> dict[str, Any]:
    """One model through ``embed_images`` next to its forward pass alone."""
    kw: dict[str, Any] = dict(model=name, model_path=folder, device=device, offline=True)
    kw.update(batch_size=batch, workers=workers, strategy="keyframe_multi", decode=decode)
    embed_images(frames[:batch], **kw)  # load once + warm-up (oneDNN kernels, CUDA context)
    runs = [embed_images(frames, **kw) for _ in range(repeats)]
    e2e = max(r.images_per_second for r in runs)
    forward = forward_only(folder, frames, batch, repeats, device)
    return {
        "images": len(frames),
        "images_per_second": e2e,
        "forward_only": forward,
        "ratio": e2e / forward,
        "from_frames": from_frames(name, folder, frames, batch, workers, repeats, device),
        "feed": runs[0].notes[0],
    }


def from_frames(
    name: str,
    folder: Path,
    frames: list[Path],
    batch: int,
    workers: int,
    repeats: int,
    device: str = "cpu",
) -> float:
    """images/s of the same frames handed over decoded (``FrameEmbedder``: what the media
    engine's pass gives the model, no JPEG to decode), preprocessing and model included."""
    arrays = [descriptor.read_image_rgb(p) for p in frames]  # decoded before the clock starts
    embedder = FrameEmbedder(
        name, model_path=folder, device=device, offline=True, batch_size=batch, workers=workers
    )
    embedder(arrays[:batch])  # warm-up
    return best_rate(len(arrays), lambda: embedder(arrays), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs (shared machines)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    ap.add_argument("--workers", type=int, default=embed_feed.default_workers())
    ap.add_argument(
        "--vit-images", type=int, default=64, help="frames for the real-size models on a CPU"
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda (fp16 there)")
    ap.add_argument(
        "--decode", default="auto", help="auto,cpu,gpu: JPEG decode choices to run end to end"
    )
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()
    names = [m for m in args.models.split(",") if m]
    if unknown := set(names) - set(MODELS):
        ap.error(f"unknown models {sorted(unknown)}")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    embed_models.import_ml()  # first torch import: as embedding runs have it (quiet_openmp)
    import torch

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        frames = extract_frames(Path(tmp), args.images)
        feed = feed_rows(frames, args.batch_size, args.workers, args.repeat, args.device)
        folders = build_models(Path(tmp) / "models", names)
        models = {}
        cpu = not args.device.startswith("cuda")
        for name, folder in folders.items():  # on a CPU the big models dominate: fewer frames
            big = cpu and name in LARGE
            some = frames[: max(args.batch_size, args.vit_images)] if big else frames
            for decode in args.decode.split(","):
                label = name if decode == "auto" else f"{name} ({decode} decode)"
                models[label] = end_to_end(
                    name,
                    folder,
                    some,
                    args.batch_size,
                    args.workers,
                    args.repeat,
                    args.device,
                    decode,
                )
    load_after = os.getloadavg()

    print(
        f"load average (1/5/15 min) before: {_fmt(load_before)}, after: {_fmt(load_after)}; "
        f"{os.cpu_count()} CPUs, feed workers {args.workers}, torch threads "
        f"{torch.get_num_threads()}: other work on the machine skews these timings"
    )
    gpu = torch.cuda.get_device_name() if not cpu else "CPU"
    print(
        f"{len(frames)} frames 640x360 JPEG, batch {args.batch_size}, {gpu}, "
        f"best of {args.repeat}; random weights (speed only)\n"
    )
    cores = os.cpu_count()
    print(f"{'feed alone (no-op model)':<44}{'images/s':>10}{'CPU ms/img':>12}{'/s if free':>12}")
    for name, row in feed.items():
        print(
            f"{name:<44}{row['images_per_second']:>10.0f}{row['cpu_ms_per_image']:>12.2f}"
            f"{row['free_cores_images_per_second']:>12.0f}"
        )
    print(f"(/s if free: min({cores} cores, threads) / CPU time per image: without other jobs)")
    print(
        f"\n{'end to end (embed_images)':<32}{'images':>7}{'images/s':>10}{'forward only':>14}"
        f"{'ratio':>8}{'from frames':>13}  feed"
    )
    for name, row in models.items():
        print(
            f"{name:<32}{row['images']:>7}{row['images_per_second']:>10.0f}"
            f"{row['forward_only']:>14.0f}{row['ratio']:>8.2f}{row['from_frames']:>13.0f}"
            f"  {row['feed']}"
        )
    print("(from frames: the same frames already decoded, as the media engine's pass hands them)")
    print("\ncommand: python -m benchmarks.bench_embed " + " ".join(sys.argv[1:]))
    if args.json:
        result = {
            "loadavg_before": list(load_before),
            "loadavg_after": list(load_after),
            "cpus": os.cpu_count(),
            "device": gpu,
            "workers": args.workers,
            "images": len(frames),
            "batch_size": args.batch_size,
            "feed": feed,
            "end_to_end": models,
        }
        print(json.dumps(result))


def _fmt(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.1f}" for x in load)


if __name__ == "__main__":
    main()
