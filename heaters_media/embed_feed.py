"""The embedding feed: image files in, model-ready batches out, prepared while the model runs.

Why: measured on an H100 machine, ``embed_images`` kept the GPU idle 97-99 % of the time,
because images were decoded and preprocessed one by one in the calling thread and only then
handed to the model. Here the per-image work runs in a pool of threads and overlaps the model:

- ``workers`` threads (default: the usable cores) run a :class:`Stage`'s ``work`` per image,
  writing straight into that image's row of its batch's buffer. The work releases the GIL
  almost throughout (OpenCV decode, torch resize, numpy normalize), so threads scale with
  cores without the start-up and pickling cost of processes.
- Bounded prefetch: while the caller runs batch i, the pool works on batches
  i+1 .. i+``prefetch``; at most ``prefetch`` + 1 batch buffers exist, whatever the number of
  images, so memory does not grow with the run.
- No queue between threads: the consumer waits on each image's future in order. A worker that
  fails returns its typed error (CorruptMediaError naming the image) through the future and the
  consumer raises it, or, with ``skip_failed``, leaves that image out of its batch and reports
  it; nothing can block forever. On exit (exhausted, error, or the caller dropping the
  generator) work not started is cancelled and work running (one image each) is finished.

A stage whose per-image work is trivial and whose ``finish`` is the real work (the GPU JPEG
stage: read the bytes; decode the batch on the GPU) sets ``whole_batches = True``: each batch is
then one task, its work and its ``finish`` in one worker, so the next batch is decoded while the
model runs and no swarm of tiny tasks fights the model's thread for the GIL (measured on an
H100: the per-image tasks held the nvJPEG feed to 4,200 images/s where its ``finish`` alone ran
at 11,000). Its CUDA work goes to the same (default) stream as the model's, queued before the
consumer sees the batch, so stream order keeps it correct without events.

Stages: :class:`HostStage` (the model's processor redone as array operations, see
:mod:`heaters_media.embed_preprocess`: normalized float32 rows for a CPU/MPS model; uint8 rows in
pinned memory for CUDA, copied non-blocking and normalized on the GPU, a quarter of the bytes),
:class:`ProcessorStage` (decode in the pool, the model's own processor per batch: for processors
the array version does not reproduce), :class:`DescriptorStage` (the weights-free descriptor),
and ``embed_gpu.GpuJpegStage`` (JPEGs decoded on the GPU).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from heaters_media import descriptor
from heaters_media.embed_preprocess import Preprocess
from heaters_media.errors import MediaError

#: Batches prepared ahead of the one the model runs (2-3 keep a GPU fed; more only costs memory).
PREFETCH = 2
MAX_WORKERS = 32


def default_workers() -> int:
    """The cores this process may use (its CPU affinity), at most ``MAX_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


class Stage(Protocol):
    """What the feed does per batch (``alloc``, ``finish``) and per image (``work``)."""

    def alloc(self, n: int) -> Any:
        """A buffer for ``n`` images."""

    def work(self, buf: Any, row: int, path: Path) -> None:
        """Fill row ``row`` of ``buf`` from ``path`` (runs in a worker); MediaError on failure."""

    def finish(self, buf: Any, rows: list[int]) -> tuple[Any, dict[int, MediaError]]:
        """The model input of the rows that worked, and rows that failed only now."""


@dataclass
class Batch:
    """``data`` (model input: pixels, or descriptor vectors) for the images at ``indices``."""

    indices: list[int]
    data: Any
    failed: list[tuple[int, MediaError]] = field(default_factory=list)


def batches(
    paths: Sequence[Path],
    stage: Stage,
    batch_size: int,
    *,
    workers: int | None = None,
    prefetch: int = PREFETCH,
    skip_failed: bool = False,
) -> Generator[Batch, None, None]:
    """Prepared batches of ``paths`` in order (see the module docstring).

    Without ``skip_failed`` the first image (in input order) that fails raises its MediaError;
    with it, failed images are left out of ``data`` and listed in ``Batch.failed``.
    """
    pool = ThreadPoolExecutor(max_workers=workers or default_workers(), thread_name_prefix="feed")
    pending: deque[tuple[list[int], Any, list[Future[Any]]]] = deque()
    starts = iter(range(0, len(paths), batch_size))
    whole = getattr(stage, "whole_batches", False)

    def submit() -> None:
        start = next(starts, None)
        if start is None:
            return
        indices = list(range(start, min(start + batch_size, len(paths))))
        buf = stage.alloc(len(indices))
        futures: list[Future[Any]]
        if whole:
            futures = [pool.submit(_whole_batch, stage, buf, [paths[i] for i in indices])]
        else:
            futures = [pool.submit(stage.work, buf, r, paths[i]) for r, i in enumerate(indices)]
        pending.append((indices, buf, futures))

    try:
        for _ in range(prefetch + 1):
            submit()
        while pending:
            indices, buf, futures = pending.popleft()
            submit()  # keep `prefetch` batches in the pool while this one goes to the model
            if whole:
                yield _whole_result(indices, futures[0].result(), skip_failed)
                continue
            good: list[int] = []
            failed: list[tuple[int, MediaError]] = []
            for row, future in enumerate(futures):
                try:
                    future.result()
                except MediaError as exc:
                    if not skip_failed:
                        raise
                    failed.append((indices[row], exc))
                else:
                    good.append(row)
            data, late = stage.finish(buf, good) if good else (None, {})
            for row, error in sorted(late.items()):
                if not skip_failed:
                    raise error
                failed.append((indices[row], error))
            yield Batch([indices[r] for r in good if r not in late], data, failed)
    finally:
        for _, _, futures in pending:
            for future in futures:
                future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _whole_batch(
    stage: Stage, buf: Any, paths: list[Path]
) -> tuple[Any, list[int], dict[int, MediaError]]:
    """A whole batch in one worker: each image's work, then ``finish`` (see ``whole_batches``)."""
    errors: dict[int, MediaError] = {}
    for row, path in enumerate(paths):
        try:
            stage.work(buf, row, path)
        except MediaError as exc:
            errors[row] = exc
    good = [r for r in range(len(paths)) if r not in errors]
    data, late = stage.finish(buf, good) if good else (None, {})
    errors.update(late)
    return data, [r for r in good if r not in late], errors


def _whole_result(
    indices: list[int], done: tuple[Any, list[int], dict[int, MediaError]], skip_failed: bool
) -> Batch:
    data, good, errors = done
    if errors and not skip_failed:
        raise errors[min(errors)]  # the first image of the batch, in input order, that failed
    return Batch(
        [indices[r] for r in good], data, [(indices[r], errors[r]) for r in sorted(errors)]
    )


class HostStage:
    """Decode + resize + crop + normalize on the CPU (:mod:`heaters_media.embed_preprocess`).

    CPU/MPS: workers write normalized float32 (3, H, W) rows, the batch is the model input as
    it is. CUDA: workers write uint8 (H, W, 3) rows into pinned memory; ``finish`` copies them
    non-blocking and normalizes on the GPU (torch's pinned allocator keeps a buffer alive until
    its copy has run, so the next batch never overwrites one in flight).
    """

    def __init__(self, prep: Preprocess, device: str, dtype: Any) -> None:
        import torch

        self.prep, self.device, self.dtype = prep, device, dtype
        self.cuda = device.startswith("cuda")
        shape = (3, 1, 1)
        self.factor = torch.tensor(prep.factor, dtype=torch.float32).reshape(shape).to(device)
        self.shift = torch.tensor(prep.shift, dtype=torch.float32).reshape(shape).to(device)

    def alloc(self, n: int) -> tuple[Any, Any]:
        import torch

        h, w = self.prep.crop
        if self.cuda:
            t = torch.empty((n, h, w, 3), dtype=torch.uint8, pin_memory=True)
        else:
            t = torch.empty((n, 3, h, w), dtype=torch.float32)
        return t, t.numpy()

    def work(self, buf: tuple[Any, Any], row: int, path: Path) -> None:
        self.fill(buf, row, self.prep.load(path))

    def fill(self, buf: tuple[Any, Any], row: int, crop: Any) -> None:
        """Row ``row`` from a resized and cropped uint8 RGB image (a file's, or a frame's)."""
        if self.cuda:
            buf[1][row] = crop
        else:
            self.prep.normalize_into(crop, buf[1][row])

    def finish(self, buf: tuple[Any, Any], rows: list[int]) -> tuple[Any, dict[int, MediaError]]:
        t = buf[0] if len(rows) == buf[0].shape[0] else buf[0][rows]
        if not self.cuda:
            return t.to(self.device, self.dtype), {}
        x = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x * self.factor.unsqueeze(0) - self.shift.unsqueeze(0)).contiguous()
        return x.to(self.dtype), {}


class ProcessorStage:
    """Decode in the pool, then the model's own processor per batch (one thread).

    For processors :class:`Preprocess` does not reproduce: correct, slower (the decode still
    runs in the pool and still overlaps the model).
    """

    def __init__(self, processor: Any, device: str, dtype: Any) -> None:
        self.processor, self.device, self.dtype = processor, device, dtype

    def alloc(self, n: int) -> list[Any]:
        return [None] * n

    def work(self, buf: list[Any], row: int, path: Path) -> None:
        buf[row] = descriptor.read_image_rgb(path)

    def finish(self, buf: list[Any], rows: list[int]) -> tuple[Any, dict[int, MediaError]]:
        pixels = self.processor(images=[buf[r] for r in rows], return_tensors="pt")
        return pixels["pixel_values"].to(self.device, dtype=self.dtype), {}


class DescriptorStage:
    """The weights-free descriptor: the whole embedding is the per-image work."""

    def alloc(self, n: int) -> np.ndarray:
        return np.empty((n, descriptor.DIMENSION), np.float32)

    def work(self, buf: np.ndarray, row: int, path: Path) -> None:
        buf[row] = descriptor.describe_file(path)

    def finish(self, buf: np.ndarray, rows: list[int]) -> tuple[Any, dict[int, MediaError]]:
        return (buf if len(rows) == len(buf) else buf[rows]), {}
