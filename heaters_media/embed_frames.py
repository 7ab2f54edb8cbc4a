"""Embeddings of decoded frames: the media engine's pass hands frames to the model directly.

The usual path (:func:`heaters_media.embed.embed_images`) reads keyframe JPEGs back from disk:
the pass encodes each keyframe, the feed decodes it again. When the one decode of a video
(:mod:`heaters_media.artifacts`) is running anyway, :class:`FrameEmbedder` takes the frames it
selects (uint8 RGB arrays, :class:`heaters_media.frames_consumer.EmbedConsumer`) and applies the
same preprocessing the feed applies to a decoded JPEG: the model's processor redone as array
operations (:class:`heaters_media.embed_preprocess.Preprocess`), the model's own processor where
that is not reproduced, or the weights-free descriptor. Only the JPEG round trip differs
(tests: cosine >= 0.999 against the JPEG path, CLIP, DINOv2 and the descriptor).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np

from heaters_media import descriptor
from heaters_media.embed_feed import HostStage, default_workers
from heaters_media.embed_models import (
    LoadedModel,
    check_device,
    env_offline,
    load_model,
    resolve_device,
    resolve_model,
)
from heaters_media.embed_preprocess import (
    REDUCED_MARGIN,
    Decoded,
    Preprocess,
    UnsupportedProcessor,
)
from heaters_media.errors import InvalidInputError


class FrameEmbedder:
    """One model, loaded once, that embeds frames: ``embedder(frames)`` -> (n, dimension)
    float32 unit vectors of uint8 RGB (h, w, 3) arrays.

    Thread-safe: windows of the media engine's pass call it from their own threads (the
    model's forward runs in inference mode; a lock keeps one batch on the model at a time).
    Each batch is resized in ``workers`` threads (default: the usable cores) into the feed's
    host stage (:class:`heaters_media.embed_feed.HostStage`).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        offline: bool = False,
        model_path: str | os.PathLike[str] | None = None,
        batch_size: int = 32,
        workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        check_device(device)
        self.spec = resolve_model(model, model_path)
        self.batch_size = batch_size
        self.workers = workers or default_workers()
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None
        self._prep: Preprocess | None = None
        self._stage: HostStage | None = None
        if self.spec.family == "descriptor":
            self.device, self.dtype, self.dimension = "cpu", "float32", descriptor.DIMENSION
            return
        self.device, self.dtype = resolve_device(device)
        self._loaded = load_model(self.spec, self.device, self.dtype, offline or env_offline())
        self.dimension = self._loaded.dimension
        try:
            self._prep = Preprocess.from_processor(self._loaded.processor)
        except UnsupportedProcessor:
            self._prep = None  # the model's own processor, per batch
        else:
            import torch

            # The feed's host stage: float32 rows on a CPU, uint8 rows in pinned memory
            # normalized on the GPU under CUDA.
            dtype = getattr(torch, self.dtype)
            self._stage = HostStage(self._prep, self.device, dtype)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def family(self) -> str:
        return self.spec.family

    def frame_short_side(self) -> int:
        """The short side frames need for this model's preprocessing to see what it would see
        in a full-size keyframe: twice the resize target (as the feed's reduced JPEG decode
        keeps), or the full frame (0) for a processor this module does not reproduce."""
        if self.spec.family == "descriptor":
            return 2 * descriptor.GRID
        if self._prep is None:
            return 0
        return math.ceil(self._prep.shortest_edge * REDUCED_MARGIN)

    def __call__(
        self, frames: Sequence[np.ndarray], full_size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Vectors of ``frames``. ``full_size`` ``(width, height)``: the size the frames were
        scaled down from; the resize target is computed from it, as the processor computes it
        from the full-size frame (``int(224 * 1280 / 720)`` is not ``int(224 * 796 / 448)``:
        a pixel of crop offset, which a small model notices)."""
        if not frames:
            return np.empty((0, self.dimension), np.float32)
        chunks = [
            self._batch(frames[i : i + self.batch_size], full_size)
            for i in range(0, len(frames), self.batch_size)
        ]
        return np.concatenate(chunks, axis=0).astype(np.float32)

    def _batch(self, frames: Sequence[np.ndarray], full_size: tuple[int, int] | None) -> np.ndarray:
        if self._loaded is None:  # the descriptor: OpenCV's BGR order, as from a decoded file
            return np.stack([descriptor.describe(_bgr(f)) for f in frames])
        if self._prep is None or self._stage is None:
            with self._lock:
                return self._loaded.embed_rgb(list(frames))
        prep, stage = self._prep, self._stage
        buf = stage.alloc(len(frames))

        def fill(row: int) -> None:
            rgb = np.ascontiguousarray(frames[row])
            width, height = full_size or (rgb.shape[1], rgb.shape[0])
            stage.fill(buf, row, prep.resize_crop(Decoded(rgb, height, width)))

        # The resizes release the GIL: a pool of threads, as the feed does for files.
        with ThreadPoolExecutor(self.workers, thread_name_prefix="frames") as pool:
            list(pool.map(fill, range(len(frames))))
        data, _ = stage.finish(buf, list(range(len(frames))))
        with self._lock:
            return self._loaded.embed_pixels(data)


def _bgr(rgb: np.ndarray) -> Any:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)


def combine(vectors: np.ndarray, strategy: str) -> np.ndarray:
    """A clip's stored vector(s) from its keyframes' vectors (in time order), as
    :func:`heaters_media.embed.embed_images` makes them: ``keyframe_multi_avg`` the re-normalized
    mean (one row), ``keyframe_midpoint`` the middle keyframe's, ``keyframe_multi`` all rows."""
    if strategy == "keyframe_multi_avg":
        mean = vectors.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)[None, :]
    if strategy == "keyframe_midpoint":
        return vectors[len(vectors) // 2 : len(vectors) // 2 + 1]
    if strategy == "keyframe_multi":
        return vectors
    raise InvalidInputError(f"unknown strategy {strategy!r}")
