"""Image (and CLIP text) embeddings: key frames in, unit vectors out, as a JSON-ready result.

Models: CLIP (``openai/clip-vit-*``) and DINOv2 (``facebook/dinov2-*``) through ``transformers``
(the ``ml`` extra), from the Hugging Face cache or a ``save_pretrained`` folder, and the
weights-free descriptor ``heaters/pixels-v1`` (see :mod:`heaters_media.descriptor`), which
needs only OpenCV and numpy.

Strategies say how a clip's key frames become its vector(s); the name is stored with the vector
(``clip_embeddings.generation_strategy``) so vectors made differently are never mixed:

- ``keyframe_midpoint``: one vector per image (normally the clip's 50 % key frame; several
  images are several clips' midpoints, embedded in one batched call),
- ``keyframe_multi``: one vector per image (the 25/50/75 % key frames of a clip),
- ``keyframe_multi_avg``: the mean of the images' unit vectors, re-normalized: one vector.

All vectors are L2-normalized, so cosine similarity is a dot product (pgvector ``<=>``/``<#>``).

Images reach the model through the feed (:mod:`heaters_media.embed_feed`): decoded and
preprocessed in a pool of threads, batches prepared while the model runs the previous one, the
model's processor redone as array operations (:mod:`heaters_media.embed_preprocess`) and, on
CUDA with torchvision, JPEGs decoded on the GPU (:mod:`heaters_media.embed_gpu`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heaters_media import descriptor, embed_feed
from heaters_media.embed_frames import combine
from heaters_media.embed_gpu import DECODES, GpuJpegStage, gpu_decode_choice, torchvision_decoder
from heaters_media.embed_models import (
    KNOWN_MODELS,
    LoadedModel,
    ModelSpec,
    ModelWeightsNotFoundError,
    check_device,
    env_offline,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_model,
)
from heaters_media.embed_preprocess import Preprocess, UnsupportedProcessor
from heaters_media.errors import InvalidInputError
from heaters_media.results import Result
from heaters_media.tools import existing_file

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
STRATEGIES = ("keyframe_midpoint", "keyframe_multi", "keyframe_multi_avg")
ON_ERROR = ("raise", "skip")

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "STRATEGIES",
    "EmbeddingResult",
    "ModelWeightsNotFoundError",
    "TextEmbeddingResult",
    "embed_images",
    "embed_text",
]

PathLike = str | os.PathLike[str]


@dataclass
class EmbeddingResult(Result):
    """Vectors of some images plus what made them (model, strategy, device) and how fast."""

    model: str
    family: str
    dimension: int
    strategy: str
    device: str
    dtype: str
    batch_size: int
    images: list[str]
    vectors: list[list[float]]
    load_seconds: float
    seconds: float
    images_per_second: float
    weights: str = ""
    notes: list[str] = field(default_factory=list)
    #: ``on_error="skip"``: image -> "kind: message" of the images left out (not in ``images``).
    failed: dict[str, str] = field(default_factory=dict)

    def array(self) -> np.ndarray:
        """The vectors as a float32 (n, dimension) array."""
        return np.asarray(self.vectors, dtype=np.float32).reshape(-1, self.dimension)


@dataclass
class TextEmbeddingResult(Result):
    """CLIP text vectors, in the same space as that model's image vectors (text search)."""

    model: str
    dimension: int
    device: str
    dtype: str
    texts: list[str]
    vectors: list[list[float]]
    load_seconds: float
    seconds: float

    def array(self) -> np.ndarray:
        return np.asarray(self.vectors, dtype=np.float32).reshape(-1, self.dimension)


def _as_vectors(data: np.ndarray) -> np.ndarray:
    """The descriptor stage's output is already the vectors."""
    return data


def _check_common(strategy: str | None, batch_size: int) -> None:
    if strategy is not None and strategy not in STRATEGIES:
        raise InvalidInputError(
            f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")


def _model_stage(loaded: LoadedModel, decode: str) -> tuple[embed_feed.Stage, str]:
    """The feed stage for a transformer model, and a note saying which one and why."""
    import torch

    dtype = getattr(torch, loaded.dtype)
    try:
        prep = Preprocess.from_processor(loaded.processor)
    except UnsupportedProcessor as exc:
        stage = embed_feed.ProcessorStage(loaded.processor, loaded.device, dtype)
        return stage, f"preprocessing by the model's own processor ({exc})"
    probe = loaded.device.startswith("cuda") and decode != "cpu"
    decoder = torchvision_decoder() if probe else None
    gpu, why = gpu_decode_choice(decode, loaded.device, decoder)
    if gpu and decoder is not None:
        return GpuJpegStage(prep, loaded.device, dtype, decoder), why
    return embed_feed.HostStage(prep, loaded.device, dtype), why


def _run_feed(
    files: list[Path],
    stage: embed_feed.Stage,
    embed: Any,
    batch_size: int,
    workers: int | None,
    skip: bool,
) -> tuple[np.ndarray, list[int], dict[str, str]]:
    """Vectors of the images that worked (in input order), their positions, and the failures."""
    chunks: list[np.ndarray] = []
    done: list[int] = []
    failed: dict[str, str] = {}
    feed = embed_feed.batches(files, stage, batch_size, workers=workers, skip_failed=skip)
    with contextlib.closing(feed):  # a model error stops the workers now, not at garbage collection
        for batch in feed:
            for i, exc in batch.failed:
                failed[str(files[i])] = f"{exc.kind}: {exc.message}"
            if batch.indices:
                chunks.append(embed(batch.data))
                done += batch.indices
    return (np.concatenate(chunks, axis=0) if chunks else np.empty((0, 0))), done, failed


def embed_images(
    images: Sequence[PathLike],
    *,
    model: str = DEFAULT_MODEL,
    strategy: str = "keyframe_midpoint",
    device: str = "auto",
    batch_size: int = 32,
    offline: bool = False,
    model_path: PathLike | None = None,
    on_error: str = "raise",
    decode: str = "auto",
    workers: int | None = None,
) -> EmbeddingResult:
    """Embed image files with ``model``; see the module docstring for strategies.

    ``offline`` (or HF_HUB_OFFLINE=1) never touches the network: weights must be in the Hugging
    Face cache or at ``model_path``. ``on_error="skip"`` leaves images that do not decode out
    (listed in ``failed``) instead of raising; ``decode`` ``auto``/``cpu``/``gpu`` says where
    JPEGs are decoded (GPU: CUDA + torchvision only); ``workers`` threads prepare images
    (default: the usable cores). ``seconds`` and ``images_per_second`` cover the whole
    embedding, decode and preprocessing included, not the model load. Raises
    InvalidInputError (unknown model/strategy/device, missing file), ModelWeightsNotFoundError,
    CorruptMediaError (an image that does not decode, named), ToolFailedError
    (torch/transformers not installed for a transformer model).
    """
    _check_common(strategy, batch_size)
    check_device(device)
    if on_error not in ON_ERROR or decode not in DECODES:
        raise InvalidInputError(f"on_error must be one of {ON_ERROR}, decode one of {DECODES}")
    if isinstance(images, str | os.PathLike):
        images = [images]
    if not images:
        raise InvalidInputError("no images to embed")
    spec = resolve_model(model, model_path)
    files = [existing_file(p) for p in images]
    offline = offline or env_offline()

    t0 = time.perf_counter()
    stage: embed_feed.Stage
    embed: Callable[[Any], np.ndarray]
    if spec.family == "descriptor":
        run_dev, dtype, dimension = "cpu", "float32", descriptor.DIMENSION
        notes = [f"{descriptor.NAME} is a colour-layout descriptor (no weights), not CLIP"]
        stage, embed = embed_feed.DescriptorStage(), _as_vectors
    else:
        run_dev, dtype = resolve_device(device)
        loaded = load_model(spec, run_dev, dtype, offline)
        stage, note = _model_stage(loaded, decode)
        dimension, notes, embed = loaded.dimension, [note], loaded.embed_pixels

    t1 = time.perf_counter()
    vectors, done, failed = _run_feed(files, stage, embed, batch_size, workers, on_error == "skip")
    vectors = vectors.reshape(len(done), dimension)
    if strategy == "keyframe_multi_avg" and done:
        vectors = combine(vectors, strategy)
    seconds = time.perf_counter() - t1
    return EmbeddingResult(
        model=spec.name,
        family=spec.family,
        dimension=dimension,
        strategy=strategy,
        device=run_dev,
        dtype=dtype,
        batch_size=batch_size,
        images=[str(files[i]) for i in done],
        vectors=vectors.astype(np.float32).tolist(),
        load_seconds=round(t1 - t0, 4),
        seconds=round(seconds, 4),
        images_per_second=round(len(done) / seconds, 2) if seconds > 0 else 0.0,
        weights=spec.source,
        notes=notes,
        failed=failed,
    )


def embed_text(
    texts: Sequence[str] | str,
    *,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    batch_size: int = 256,
    offline: bool = False,
    model_path: PathLike | None = None,
) -> TextEmbeddingResult:
    """CLIP text vectors (for text -> clip search). DINOv2 and the descriptor have no text side."""
    _check_common(None, batch_size)
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidInputError("embed_text needs a non-empty list of strings")
    spec: ModelSpec = resolve_model(model, model_path)
    if spec.family != "clip":
        raise InvalidInputError(
            f"{model!r} ({spec.family}) embeds images only; text search needs a CLIP model"
        )
    offline = offline or env_offline()
    t0 = time.perf_counter()
    run_dev, dtype = resolve_device(device)
    loaded = load_model(spec, run_dev, dtype, offline)
    tokenizer = load_tokenizer(spec, offline)
    max_len = int(loaded.model.config.text_config.max_position_embeddings)
    t1 = time.perf_counter()
    chunks = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(
            texts[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=max_len,
            return_tensors="pt",
        )
        chunks.append(loaded.embed_tokens(dict(tokens)))
    vectors = np.concatenate(chunks, axis=0)
    return TextEmbeddingResult(
        model=spec.name,
        dimension=loaded.dimension,
        device=run_dev,
        dtype=dtype,
        texts=texts,
        vectors=vectors.tolist(),
        load_seconds=round(t1 - t0, 4),
        seconds=round(time.perf_counter() - t1, 4),
    )
