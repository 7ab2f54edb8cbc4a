"""Where the GPU JPEG feed spends its time (CUDA only): nvJPEG alone, ``finish`` alone, the feed.

Why: the end-to-end rate of an embedding run on a GPU is set by the slowest of the pieces
measured here; on an H100 this is what showed that per-image tasks, not the decode, held the
feed back (see :mod:`heaters_media.embed_feed`, ``whole_batches``). Frames as in
``bench_embed`` (the bundled sample, Big Buck Bunny (c) Blender Foundation, CC BY 3.0).
Usage (on a CUDA machine)::

    python -m benchmarks.profile_gpu_feed [--images 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def main() -> None:
    import torch
    import transformers as tf

    from benchmarks.bench_embed import extract_frames
    from heaters_media import embed_feed
    from heaters_media.embed_gpu import GpuJpegStage, torchvision_decoder
    from heaters_media.embed_preprocess import Preprocess

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=4096)
    args = ap.parse_args()
    decoder = torchvision_decoder()
    if decoder is None:
        raise SystemExit("needs CUDA and torchvision >= 0.19")
    from torchvision.io import ImageReadMode, decode_jpeg

    def timed(label: str, n: int, fn: Callable[[], object], reps: int = 3) -> None:
        fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        print(f"{label:<60}{n / best:>10.0f} img/s", flush=True)

    frames = extract_frames(Path(tempfile.mkdtemp(prefix="gpu-feed-")), args.images)
    n = len(frames)
    datas = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in frames]
    for size in (64, 256, 1024):

        def decode(size: int = size) -> None:
            for i in range(0, n, size):
                decode_jpeg(datas[i : i + size], mode=ImageReadMode.RGB, device="cuda")

        timed(f"decode_jpeg alone, lists of {size}", n, decode)
    stage = GpuJpegStage(
        Preprocess.from_processor(tf.CLIPImageProcessor()), "cuda", torch.float16, decoder
    )
    bufs = []
    for i in range(0, n, 256):
        buf = stage.alloc(min(256, n - i))
        for row, path in enumerate(frames[i : i + 256]):
            stage.work(buf, row, path)
        bufs.append(buf)
    timed(
        "GpuJpegStage.finish alone (decode+resize+crop+normalize)",
        n,
        lambda: [stage.finish(b, list(range(len(b)))) for b in bufs],
    )
    for workers in (4, 16):

        def feed(workers: int = workers) -> None:
            for b in embed_feed.batches(frames, stage, 256, workers=workers):
                _ = b.data

        timed(f"whole feed (embed_feed.batches), {workers} workers, batch 256", n, feed)


if __name__ == "__main__":
    main()
