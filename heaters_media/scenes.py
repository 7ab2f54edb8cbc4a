"""Hard-cut scene detection over one streamed decode.

Three detectors share one interface (``FrameScorer``: chunk of frames in, one score per
frame out, state carried across chunks) and one cut-selection step:

- ``adaptive`` (default): the HSV content difference of consecutive frames, divided by the mean
  difference of its neighbours. Fast camera motion raises the neighbours too, so it does not
  cut there; a real cut is an isolated spike. Same decision rule as PySceneDetect's
  AdaptiveDetector (ratio >= 3.0 and content >= 15), on area-downscaled frames.
- ``content``: the raw HSV content difference against a fixed threshold (27).
- ``histogram``: the original Heaters method, correlation of hue/saturation histograms of
  consecutive frames; a cut where correlation drops below 0.6.

Frame *i*'s score compares frame *i - 1* with frame *i*, so a cut at *i* means a new scene
starts at frame *i* (``cut_frames`` lists those first frames).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import cv2
import numpy as np

from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.frames import (
    FrameGeometry,
    Segment,
    analysis_geometry,
    plan_segments,
    stream_frames,
)
from heaters_media.probe import ProbeResult, packet_index, probe
from heaters_media.progress import ProgressFn
from heaters_media.results import Result

DEFAULT_THRESHOLDS = {"adaptive": 3.0, "content": 27.0, "histogram": 0.6}
DEFAULT_ANALYSIS_WIDTH = 160
ADAPTIVE_WINDOW = 2
ADAPTIVE_MIN_CONTENT = 15.0


def rgb_to_hsv(frames: np.ndarray) -> np.ndarray:
    """8-bit HSV (H 0..179, S and V 0..255) of a chunk of uint8 RGB frames, by OpenCV.

    The chunk is viewed as one tall image so a single ``cvtColor`` call converts it all.
    """
    n, h, w, _ = frames.shape
    flat = np.ascontiguousarray(frames).reshape(n * h, w, 3)
    return cv2.cvtColor(flat, cv2.COLOR_RGB2HSV).reshape(n, h, w, 3)


class FrameScorer(Protocol):
    """Turns chunks of RGB frames into one score per frame, remembering the previous frame."""

    def score(self, chunk: np.ndarray) -> np.ndarray: ...


class ContentScorer:
    """Mean absolute HSV difference between consecutive frames (0..255)."""

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None

    def score(self, chunk: np.ndarray) -> np.ndarray:
        hsv = rgb_to_hsv(chunk)
        if self._prev is None:
            seq, first = hsv, [0.0]
        else:
            seq, first = np.concatenate([self._prev[None], hsv]), []
        self._prev = hsv[-1].copy()
        n = len(seq)
        if n < 2:
            return np.asarray(first, dtype=np.float64)
        rows = seq.reshape(n, -1)
        diffs = cv2.absdiff(rows[1:], rows[:-1]).mean(axis=1, dtype=np.float64)
        return np.concatenate([np.asarray(first, dtype=np.float64), diffs])


class HistogramScorer:
    """Pearson correlation of 50x60-bin hue/saturation histograms of consecutive frames.

    This is the original method's measure (OpenCV ``compareHist`` with ``HISTCMP_CORREL``),
    computed with numpy: 1.0 for identical colour content, lower at a cut.
    """

    H_BINS, S_BINS = 50, 60

    def __init__(self) -> None:
        self._prev: np.ndarray | None = None

    def _histograms(self, chunk: np.ndarray) -> np.ndarray:
        hsv = rgb_to_hsv(chunk)
        hb = (hsv[..., 0].astype(np.int32) * self.H_BINS) // 180
        sb = (hsv[..., 1].astype(np.int32) * self.S_BINS) // 256
        n = len(chunk)
        bins = self.H_BINS * self.S_BINS
        idx = (hb * self.S_BINS + sb).reshape(n, -1) + (np.arange(n) * bins)[:, None]
        return np.bincount(idx.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float64)

    def score(self, chunk: np.ndarray) -> np.ndarray:
        hists = self._histograms(chunk)
        first: list[float] = []
        if self._prev is None:
            seq, first = hists, [1.0]
        else:
            seq = np.concatenate([self._prev[None], hists])
        self._prev = hists[-1].copy()
        if len(seq) < 2:
            return np.asarray(first, dtype=np.float64)
        centred = seq - seq.mean(axis=1, keepdims=True)
        a, b = centred[:-1], centred[1:]
        denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
        corr = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), 1.0)
        return np.concatenate([np.asarray(first, dtype=np.float64), corr])


def adaptive_ratio(scores: np.ndarray, window: int = ADAPTIVE_WINDOW) -> np.ndarray:
    """Each score divided by the mean of the ``window`` scores on either side (itself excluded)."""
    n = len(scores)
    padded = np.pad(scores, window, mode="edge")
    kernel = np.ones(2 * window + 1)
    kernel[window] = 0.0
    sums = np.convolve(padded, kernel, mode="valid")[:n]
    means = sums / (2 * window)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(means > 1e-9, scores / means, np.where(scores > 0, 255.0, 0.0))
    return ratio


def candidate_cuts(
    detector: str, scores: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose score marks a cut, and a per-frame strength used for reporting."""
    if detector == "histogram":
        mask = scores < threshold
        strength = 1.0 - scores
    elif detector == "content":
        mask = scores >= threshold
        strength = scores
    else:
        ratio = adaptive_ratio(scores)
        mask = (ratio >= threshold) & (scores >= ADAPTIVE_MIN_CONTENT)
        strength = ratio
    mask[0] = False  # frame 0 starts the first scene; it is never a cut
    return np.flatnonzero(mask), strength


def enforce_min_length(cuts: np.ndarray, min_frames: int) -> list[int]:
    """Drop cuts closer than ``min_frames`` to the previous kept cut (or to the start)."""
    kept: list[int] = []
    last = 0
    for c in cuts.tolist():
        if c - last >= min_frames:
            kept.append(int(c))
            last = c
    return kept


@dataclass
class Scene:
    start_frame: int
    end_frame: int  # exclusive
    start_time: float
    end_time: float


@dataclass
class SceneDetectionResult(Result):
    path: str
    scenes: list[Scene]
    cut_frames: list[int]
    metadata: dict[str, Any] = field(default_factory=dict)


def scenes_from_cuts(cuts: list[int], frame_count: int, fps: float) -> list[Scene]:
    """Half-open scenes [start, end) tiling 0..frame_count from the first frames of new scenes."""
    bounds = [0, *cuts, frame_count]
    return [
        Scene(s, e, round(s / fps, 6), round(e / fps, 6))
        for s, e in itertools.pairwise(bounds)
        if e > s
    ]


def _scorer(detector: str) -> FrameScorer:
    return HistogramScorer() if detector == "histogram" else ContentScorer()


@dataclass
class _SegmentScores:
    scores: np.ndarray
    first: np.ndarray | None
    last: np.ndarray | None
    frames: int


def _score_segments(
    path: str | os.PathLike[str],
    geometry: FrameGeometry,
    detector: str,
    segments: list[Segment],
    fast_decode: bool,
    cpus: int,
    progress: ProgressFn | None,
    total: int,
) -> tuple[np.ndarray, int] | None:
    """Score every frame, decoding the segments side by side (one ffmpeg each).

    Each segment is scored on its own; the score of a segment's first frame is then recomputed
    against the previous segment's last frame, so the result equals one sequential pass.
    Returns None if a segment (of several) did not yield exactly its frames.
    """
    lock = threading.Lock()
    done = [0]
    threads = max(1, cpus // len(segments)) if len(segments) > 1 else 0

    def run(seg: Segment) -> _SegmentScores:
        scorer = _scorer(detector)
        parts: list[np.ndarray] = []
        first = last = None
        n = 0
        limit = seg.end - seg.start if len(segments) > 1 and seg.seek is None else None
        for chunk in stream_frames(
            path,
            geometry,
            fast_decode=fast_decode,
            threads=threads,
            seek=seg.seek,
            max_frames=limit,
        ):
            if first is None:
                first = chunk[0].copy()
            last = chunk[-1]
            parts.append(scorer.score(chunk))
            n += len(chunk)
            if progress:
                with lock:
                    done[0] += len(chunk)
                    progress(min(done[0] / max(total, 1), 1.0), f"{done[0]} frames")
        scores = np.concatenate(parts) if parts else np.zeros(0)
        return _SegmentScores(scores, first, None if last is None else last.copy(), n)

    if len(segments) == 1:
        results = [run(segments[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(segments)) as pool:
            results = list(pool.map(run, segments))
        if any(r.frames != seg.end - seg.start for r, seg in zip(results, segments, strict=True)):
            return None
        for prev, cur in itertools.pairwise(results):
            assert prev.last is not None and cur.first is not None
            cur.scores[0] = _scorer(detector).score(np.stack([prev.last, cur.first]))[1]
    return np.concatenate([r.scores for r in results]), sum(r.frames for r in results)


def decode_segments(
    path: str | os.PathLike[str], info: ProbeResult, parallel: int
) -> tuple[ProbeResult, list[Segment]]:
    """The key-frame-aligned segments ``parallel`` decoders share, and the probe corrected by
    the packet count (a truncated file is probed again with verification, which names it)."""
    segments = [Segment(0, info.frame_count, None)]
    if parallel > 1:
        index = packet_index(path)
        if info.declared_frames is not None and index.count < info.declared_frames:
            info = probe(path)
        elif info.declared_frames is None:
            info = replace(info, frame_count=index.count or info.frame_count)
        segments = plan_segments(index.count, index.keyframes, index.keyframe_times, parallel)
    return info, segments


def detect_scenes(
    path: str | os.PathLike[str],
    *,
    detector: str = "adaptive",
    threshold: float | None = None,
    min_scene_len: float = 1.0,
    analysis_width: int | None = None,
    fast_decode: bool = True,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> SceneDetectionResult:
    """Detect hard cuts in ``path`` with one streamed decode; see the module doc for detectors."""
    if detector not in DEFAULT_THRESHOLDS:
        raise InvalidInputError(
            f"unknown detector {detector!r}; choose one of {', '.join(DEFAULT_THRESHOLDS)}"
        )
    if min_scene_len < 0:
        raise InvalidInputError("min_scene_len must be >= 0 seconds")
    threshold = DEFAULT_THRESHOLDS[detector] if threshold is None else float(threshold)
    width = analysis_width or DEFAULT_ANALYSIS_WIDTH
    if width < 16:
        raise InvalidInputError("analysis_width must be at least 16 pixels")

    parallel = workers if workers is not None else min(os.cpu_count() or 1, 8)
    # The parallel path reads every packet anyway (key-frame index), so the probe need not
    # count them too: one demux pass less. Fewer packets than the container declares sends
    # the file to the verifying probe, which names the truncation (or clears packets without
    # timestamps).
    info = probe(path, verify=parallel <= 1)
    started = time.perf_counter()
    info, segments = decode_segments(path, info, parallel)
    geometry = analysis_geometry(info.width, info.height, width)
    scored = _score_segments(
        path, geometry, detector, segments, fast_decode, parallel, progress, info.frame_count
    )
    if scored is None:  # a segment did not decode to its expected frames: play it safe
        segments = [Segment(0, info.frame_count, None)]
        scored = _score_segments(
            path, geometry, detector, segments, fast_decode, 1, progress, info.frame_count
        )
    assert scored is not None
    scores, done = scored
    if done == 0:
        raise CorruptMediaError(f"no decodable video frames in {os.fspath(path)}")
    candidates, strength = candidate_cuts(detector, scores, threshold)
    min_frames = max(1, round(min_scene_len * info.fps))
    cuts = enforce_min_length(candidates, min_frames)
    seconds = time.perf_counter() - started
    return SceneDetectionResult(
        path=os.fspath(path),
        scenes=scenes_from_cuts(cuts, done, info.fps),
        cut_frames=cuts,
        metadata={
            "detector": detector,
            "threshold": threshold,
            "min_scene_len": min_scene_len,
            "min_scene_frames": min_frames,
            "analysis_width": geometry.width,
            "analysis_height": geometry.height,
            "fast_decode": fast_decode,
            "decode_segments": len(segments),
            "fps": info.fps,
            "frames_analysed": done,
            "frames_declared": info.frame_count,
            "seconds": round(seconds, 4),
            "frames_per_second": round(done / seconds, 1) if seconds > 0 else None,
            "cut_strengths": [round(float(strength[c]), 3) for c in cuts],
        },
    )
