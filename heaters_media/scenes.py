"""Scene detection over one streamed decode: hard cuts, plus gradual transitions and flashes.

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

``adaptive`` and ``content`` also score every frame for gradual transitions in the same pass
(``transitions.py``: fades through black or white, dissolves, wipes get one cut in their
middle; flash frames inside a shot get none); what becomes of short scenes and of transition
frames is ``scene_policy.py``'s.
"""

from __future__ import annotations

import itertools
import math
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
from heaters_media.scene_policy import SHORT_POLICIES, plan_scenes
from heaters_media.transitions import (
    HISTORY,
    Boundary,
    SegmentThumbs,
    TransitionScorer,
    find_boundaries,
    keep_ends,
    recompute_head,
    thumbnails,
)

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
    #: Shorter than ``min_scene_len`` (kept as its own scene: see ``scene_policy``).
    short: bool = False
    #: Frames [start, end) of the gradual transition (fade, dissolve, wipe) that leads into
    #: this scene; None after a hard cut and for the first scene.
    transition_before: tuple[int, int] | None = None


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
    rows: np.ndarray | None = None  # TransitionScorer rows (gradual detection only)
    ends: SegmentThumbs | None = None


def _fix_segment_heads(results: list[_SegmentScores]) -> None:
    """Recompute each later segment's first transition rows from the thumbnails before it, so
    the rows equal one sequential pass (they look up to ``HISTORY`` frames back)."""
    history: np.ndarray | None = None
    for r in results:
        if r.rows is None or r.ends is None:
            return
        if history is not None:
            head = recompute_head(history, r.ends.head)
            r.rows[: len(head)] = head
        tail = r.ends.tail
        history = tail if history is None else np.concatenate([history, tail])[-HISTORY:]


def _score_segments(
    path: str | os.PathLike[str],
    geometry: FrameGeometry,
    detector: str,
    segments: list[Segment],
    fast_decode: bool,
    cpus: int,
    progress: ProgressFn | None,
    total: int,
    gradual: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """Score every frame, decoding the segments side by side (one ffmpeg each).

    Each segment is scored on its own; the score of a segment's first frame is then recomputed
    against the previous segment's last frame (and its first transition rows against the
    previous segments' last thumbnails), so the result equals one sequential pass.
    Returns None if a segment (of several) did not yield exactly its frames.
    """
    lock = threading.Lock()
    done = [0]
    threads = max(1, cpus // len(segments)) if len(segments) > 1 else 0

    def run(seg: Segment) -> _SegmentScores:
        scorer = _scorer(detector)
        transitions = TransitionScorer() if gradual else None
        parts: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        ends: SegmentThumbs | None = None
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
            if transitions is not None:
                colour = thumbnails(chunk)
                rows.append(transitions.score_thumbnails(colour))
                ends = keep_ends(ends, colour)
            n += len(chunk)
            if progress:
                with lock:
                    done[0] += len(chunk)
                    progress(min(done[0] / max(total, 1), 1.0), f"{done[0]} frames")
        scores = np.concatenate(parts) if parts else np.zeros(0)
        kept = np.concatenate(rows) if rows else None
        return _SegmentScores(scores, first, None if last is None else last.copy(), n, kept, ends)

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
        _fix_segment_heads(results)
    parts = [r.rows for r in results if r.rows is not None]
    rows = np.concatenate(parts) if gradual and len(parts) == len(results) else None
    return np.concatenate([r.scores for r in results]), rows, sum(r.frames for r in results)


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


#: Where each detector's threshold means something: the adaptive ratio and the content
#: difference are positive scores (content at most 255), the histogram correlation is at most 1.
THRESHOLD_RANGES = {"adaptive": (0.0, math.inf), "content": (0.0, 255.0), "histogram": (0.0, 1.0)}


def check_parameters(
    detector: str,
    threshold: float | None,
    min_scene_len: float,
    analysis_width: int | None,
    workers: int | None,
) -> tuple[float, int]:
    """The threshold and analysis width to use, or InvalidInputError for a meaningless request.

    Why strict: a NaN threshold compares false with every score (no cut, silently), and a
    zero read as "the default" hides a typo. Only ``None`` means "the default"; 0, negative,
    NaN and infinite values are refused wherever they cannot mean anything.
    """
    if detector not in DEFAULT_THRESHOLDS:
        raise InvalidInputError(
            f"unknown detector {detector!r}; choose one of {', '.join(DEFAULT_THRESHOLDS)}"
            ", transnetv2"
        )
    if not _finite(min_scene_len) or min_scene_len < 0:
        raise InvalidInputError(
            f"min_scene_len must be a finite number of seconds >= 0, got {min_scene_len!r}"
        )
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[detector]
    low, high = THRESHOLD_RANGES.get(detector, (0.0, math.inf))
    if not _finite(threshold) or not low < float(threshold) <= high:
        bound = f"<= {high:g}" if math.isfinite(high) else "finite"
        raise InvalidInputError(
            f"{detector} threshold must be > {low:g} and {bound}, got {threshold!r}"
        )
    width = DEFAULT_ANALYSIS_WIDTH if analysis_width is None else analysis_width
    if isinstance(width, bool) or not isinstance(width, int) or width < 16:
        raise InvalidInputError(f"analysis_width must be an integer >= 16 pixels, got {width!r}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise InvalidInputError(f"workers must be an integer >= 1, got {workers!r}")
    return float(threshold), width


def _finite(value: object) -> bool:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
    gradual: bool = True,
    short_policy: str | None = None,
    trim_transitions: bool = False,
) -> SceneDetectionResult:
    """Detect scene boundaries in ``path`` with one streamed decode (see the module doc).

    ``gradual`` (``adaptive`` and ``content``): also find fades, dissolves and wipes and leave
    flash frames alone (``heaters_media.transitions``); False gives the hard cuts alone, as
    before. ``short_policy`` ("keep", "merge", "drop"; None: "keep", but "merge" for
    ``histogram``, whose false cuts in fast motion only the minimum length hides) and
    ``trim_transitions``: see ``heaters_media.scene_policy``.
    """
    if detector == "transnetv2":  # the ml extra's network (heaters_media.transnet)
        from heaters_media.transnet import scenes_by_policy

        return scenes_by_policy(
            path,
            threshold=threshold,
            min_scene_len=min_scene_len,
            short_policy=short_policy,
            progress=progress,
        )
    threshold, width = check_parameters(detector, threshold, min_scene_len, analysis_width, workers)
    if short_policy is None:
        short_policy = "merge" if detector == "histogram" else "keep"
    if short_policy not in SHORT_POLICIES:
        raise InvalidInputError(
            f"short_policy must be one of {', '.join(SHORT_POLICIES)}, got {short_policy!r}"
        )
    gradual = gradual and detector != "histogram"
    parallel = workers if workers is not None else min(os.cpu_count() or 1, 8)
    # The parallel path reads every packet anyway (key-frame index), so the probe need not
    # count them too: one demux pass less. Fewer packets than the container declares sends
    # the file to the verifying probe, which names the truncation (or clears packets without
    # timestamps).
    info = probe(path, verify=parallel <= 1)
    started = time.perf_counter()
    info, segments = decode_segments(path, info, parallel)
    geometry = analysis_geometry(info.width, info.height, width)
    args = (path, geometry, detector)
    total = info.frame_count
    scored = _score_segments(
        *args, segments, fast_decode, parallel, progress, total, gradual=gradual
    )
    if scored is None:  # a segment did not decode to its expected frames: play it safe
        segments = [Segment(0, info.frame_count, None)]
        scored = _score_segments(*args, segments, fast_decode, 1, progress, total, gradual=gradual)
    assert scored is not None
    scores, rows, done = scored
    if done == 0:
        raise CorruptMediaError(f"no decodable video frames in {os.fspath(path)}")
    candidates, strength = candidate_cuts(detector, scores, threshold)
    flashes: list[tuple[int, int]] = []
    if rows is not None:
        boundaries, flashes = find_boundaries(rows, candidates)
    else:
        boundaries = [Boundary(c, c, c, "cut") for c in candidates.tolist()]
    min_frames = max(1, round(min_scene_len * info.fps))
    if short_policy == "merge":
        kept = set(enforce_min_length(np.array([b.cut for b in boundaries]), min_frames))
        boundaries = [b for b in boundaries if b.cut in kept]
    spans, boundaries, dropped = plan_scenes(
        boundaries, done, min_frames, short_policy, trim_transitions
    )
    fps = info.fps
    scenes = [
        Scene(s.start, s.end, round(s.start / fps, 6), round(s.end / fps, 6), s.short)
        for s in spans
    ]
    for scene, span in zip(scenes, spans, strict=True):
        scene.transition_before = span.transition_before
    seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
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
        "cut_strengths": [round(float(strength[b.cut]), 3) for b in boundaries],
        "gradual": gradual,
        "short_policy": short_policy,
        "trim_transitions": trim_transitions,
        "transitions": [
            {"cut": b.cut, "start": b.start, "end": b.end, "kind": b.kind} for b in boundaries
        ],
        "flashes": [list(f) for f in flashes],
        "short_scenes": sum(s.short for s in scenes),
    }
    if short_policy == "drop":
        metadata["dropped_scenes"] = [[s.start, s.end] for s in dropped]
    return SceneDetectionResult(
        path=os.fspath(path),
        scenes=scenes,
        cut_frames=[s.start_frame for s in scenes if s.start_frame > 0],
        metadata=metadata,
    )
