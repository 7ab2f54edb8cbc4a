"""Gradual transitions and flash frames, for the ``adaptive`` and ``content`` detectors.

A hard-cut detector compares consecutive frames, so it is blind to what edits use besides cuts:
a dissolve or a wipe spreads the change over 8-30 frames (no single frame differs much), a fade
through black makes the colour measure jump on near-black frames (where hue and saturation are
noise), and a flash frame differs from both neighbours although the shot goes on. Here:

- **Signals, streamed.** Each analysis frame is reduced to a small luma thumbnail (about 32
  pixels wide, block means). Per frame we keep a handful of numbers: the mean absolute luma
  difference to the frame 1, 2, 3, 4, 8, ... 48 frames back (``LAGS``), a *betweenness* per scale
  (how far the frame h back lies outside the per-pixel range of the frames 2h back and now: a
  dissolve or a wipe only moves each pixel from its old value towards its new one), the colour
  difference to the previous frame, and the luma mean and spread. Luma, because a shot whose
  colours rotate (lighting, a grade) is not a transition. Everything needs only the last 48
  thumbnails, so a video is never held; a segment decoded on its own recomputes its first 48
  rows from the previous segment's tail (``recompute_head``), which equals one pass.
- **Decisions, on the whole video** (``find_boundaries``): (1) hard-cut candidates of the
  colour detector are kept when the colour thumbnail confirms them, unless the frame before the
  spike comes back within three frames (a *flash*: compare frame i-1 with i+k, k <= 3); (2)
  runs of solid black or white frames are fades through that colour: one cut at the run's
  middle, the transition spanning the ramps on both sides (a run of at most three frames
  entered and left abruptly, with the same picture on both sides, is a flash instead); (3) a
  window of 2h frames (h in ``SCALES``) is a dissolve or wipe when the change across it is at
  least ``GRADUAL_RATIO`` times the change over h frames just before it and just after it
  (twin comparison: the change accumulates inside the window and not outside), the middle frame
  lies between the ends, the change is mostly monotonic, and no single frame carries it (that
  is a cut). Windows are taken strongest first and never overlap; the cut goes where half of
  the window's excess frame-to-frame change is reached, the middle of the transition.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LAGS = (1, 2, 3, 4, 8, 12, 16, 24, 32, 48)
SCALES = (4, 8, 12, 16, 24)
HISTORY = max(LAGS)  # thumbnails a frame's row needs (2 * max(SCALES))
THUMB_WIDTH = 32
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_LAG_COL = {lag: k for k, lag in enumerate(LAGS)}
_BETWEEN_COL = {h: len(LAGS) + k for k, h in enumerate(SCALES)}
_COLOUR_COL = len(LAGS) + len(SCALES)
_MEAN_COL = _COLOUR_COL + 1
_STD_COL = _COLOUR_COL + 2
COLUMNS = _STD_COL + 1

#: A hard cut must change the colour thumbnail by this much (0..255); the HSV measure alone
#: jumps between two near-black frames of a fade, where hue and saturation are noise.
HARD_MIN_COLOUR = 6.0
#: A spike is a flash when a frame within three frames after it is this close to the frame
#: before it, relative to the spike's own change.
FLASH_RATIO = 0.4
#: Solid frames (fades through black or white): luma spread and level, 0..255.
SOLID_STD, DARK, LIGHT = 2.5, 24.0, 231.0
#: Dissolves and wipes (see the module doc): change across / change beside, the least change
#: across (luma levels), the largest betweenness, the least monotonicity, and the largest
#: peak (max / mean frame-to-frame change inside the window: larger is a cut).
GRADUAL_RATIO, GRADUAL_MIN_CHANGE = 2.5, 20.0
BETWEEN_MAX, MONOTONE_MIN, PEAK_MAX = 0.10, 0.4, 3.0
#: Slides and pushes move the picture (not between, not monotonic) but start and stop sharply:
#: accepted when the ratio and the rate inside against outside are both this high.
FAST_RATIO, FAST_RATE = 6.0, 4.0


def thumbnails(chunk: np.ndarray) -> np.ndarray:
    """Colour thumbnails (n, h', w', 3) float32: means of f x f blocks, about ``THUMB_WIDTH`` wide.

    The chunk is cropped to whole blocks and resized as one tall image: with a whole factor,
    OpenCV's area interpolation averages each block alone, so no block mixes two frames.
    """
    n, h, w, _ = chunk.shape
    f = max(1, w // THUMB_WIDTH)
    th, tw = max(1, h // f), max(1, w // f)
    tall = np.ascontiguousarray(chunk[:, : th * f, : tw * f]).reshape(n * th * f, tw * f, 3)
    small = cv2.resize(tall, (tw, n * th), interpolation=cv2.INTER_AREA)
    return small.reshape(n, th, tw, 3).astype(np.float32)


class TransitionScorer:
    """Per-frame transition signals (``COLUMNS`` float32 columns), carried across chunks."""

    def __init__(self) -> None:
        self._luma: np.ndarray | None = None  # the last <= HISTORY luma thumbnails
        self._colour: np.ndarray | None = None  # the last colour thumbnail

    def score(self, chunk: np.ndarray) -> np.ndarray:
        return self.score_thumbnails(thumbnails(chunk))

    def score_thumbnails(self, colour: np.ndarray) -> np.ndarray:
        luma = colour @ LUMA
        n = len(luma)
        rows = np.zeros((n, COLUMNS), dtype=np.float32)
        past = 0 if self._luma is None else len(self._luma)
        seq = luma if self._luma is None else np.concatenate([self._luma, luma])
        here = np.arange(n) + past
        for lag, col in _LAG_COL.items():
            ok = here >= lag
            i = here[ok]
            rows[ok, col] = np.abs(seq[i] - seq[i - lag]).mean(axis=(1, 2))
        for h, col in _BETWEEN_COL.items():
            ok = here >= 2 * h
            i = here[ok]
            a, m, b = seq[i - 2 * h], seq[i - h], seq[i]
            outside = np.maximum(m - np.maximum(a, b), 0) + np.maximum(np.minimum(a, b) - m, 0)
            rows[ok, col] = outside.mean(axis=(1, 2))
        cseq = colour if self._colour is None else np.concatenate([self._colour[None], colour])
        first = 0 if self._colour is None else 1
        diffs = np.abs(cseq[1:] - cseq[:-1]).mean(axis=(1, 2, 3))
        rows[1 - first :, _COLOUR_COL] = diffs
        rows[:, _MEAN_COL] = luma.mean(axis=(1, 2))
        rows[:, _STD_COL] = luma.std(axis=(1, 2))
        self._luma = seq[-HISTORY:].copy()
        self._colour = colour[-1].copy()
        return rows


@dataclass
class SegmentThumbs:
    """The first and last ``HISTORY`` colour thumbnails of one decoded segment."""

    head: np.ndarray
    tail: np.ndarray


def keep_ends(ends: SegmentThumbs | None, colour: np.ndarray) -> SegmentThumbs:
    """Update a segment's head/tail thumbnails with the next chunk's."""
    if ends is None:
        return SegmentThumbs(colour[:HISTORY].copy(), colour[-HISTORY:].copy())
    head = ends.head
    if len(head) < HISTORY:
        head = np.concatenate([head, colour[: HISTORY - len(head)]])
    tail = np.concatenate([ends.tail, colour])[-HISTORY:].copy()
    return SegmentThumbs(head, tail)


def recompute_head(history: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Rows of a segment's first frames given the thumbnails that precede it in the video."""
    scorer = TransitionScorer()
    scorer.score_thumbnails(history)
    return scorer.score_thumbnails(head)


@dataclass(frozen=True)
class Boundary:
    """Where one scene ends and the next begins.

    ``cut`` is the first frame of the new scene; the transition occupies frames
    ``[start, end)`` (empty for a hard cut: ``start == end == cut``), which a clip may leave out
    on both sides. ``kind`` is "cut", "fade_black", "fade_white" or "gradual" (a dissolve or a
    wipe: the two are not told apart).
    """

    cut: int
    start: int
    end: int
    kind: str


def _solid_runs(solid: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) of every run of True."""
    edges = np.diff(np.concatenate([[0], solid.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def _flash_at(lag: dict[int, np.ndarray], c: int) -> tuple[int, int] | None:
    """The flash (first, last frame back to normal) whose edge is the spike at ``c``, or None.

    A spike at c starts a flash of k <= 3 frames when frame c-1 is back at c+k, and ends one
    when frame c is what frame c-k-1 was: either edge alone may be the detector's candidate.
    """
    d1 = lag[1]
    n = len(d1)
    near = FLASH_RATIO * d1[c]
    starts = c >= 1 and d1[c] >= 3 * d1[c - 1]  # a jump out of a steady shot
    ends = c + 1 < n and d1[c] >= 3 * d1[c + 1]  # a jump back into one
    for k in (1, 2, 3):
        if starts and c + k < n and lag[k + 1][c + k] <= near:
            return c, c + k
        if ends and c - k - 1 >= 0 and lag[k + 1][c] <= near:
            return c - k, c
    return None


def _fades(rows: np.ndarray, lag: dict[int, np.ndarray], flash: np.ndarray) -> list[Boundary]:
    """Runs of solid black/white frames between two pictures: one boundary each."""
    mean, std = rows[:, _MEAN_COL], rows[:, _STD_COL]
    n = len(rows)
    d1 = lag[1]
    solid = (std < SOLID_STD) & ((mean < DARK) | (mean > LIGHT))
    out = []
    for r0, r1 in _solid_runs(solid):
        if r0 == 0 or r1 == n - 1:
            continue  # a fade in at the start or out at the end: nothing on one side
        k = r1 - r0 + 1
        abrupt = d1[r0] >= 3 * d1[r0 - 1] and r1 + 2 < n and d1[r1 + 1] >= 3 * d1[r1 + 2]
        same = k <= 3 and lag[k + 1][r1 + 1] <= FLASH_RATIO * max(d1[r0], d1[r1 + 1])
        if abrupt and same:
            flash[r0 : r1 + 2] = True
            continue
        dark = mean[r0] < 128
        away = mean if dark else 255.0 - mean  # distance from the solid colour
        a, b = r0, r1
        while a > 0 and away[a - 1] > away[a] + 0.25:
            a -= 1
        while b < n - 1 and away[b + 1] > away[b] + 0.25:
            b += 1
        kind = "fade_black" if dark else "fade_white"
        out.append(Boundary(int(r0 + r1 + 1) // 2, int(a), int(b) + 1, kind))
    return out


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    inside = (index >= 0) & (index < len(values))
    return np.where(inside, values[np.clip(index, 0, len(values) - 1)], 0.0)


def _gradual_candidates(
    lag: dict[int, np.ndarray], rows: np.ndarray
) -> list[tuple[float, int, int]]:
    """(strength, middle frame m, half-width h) of every window that looks like a transition."""
    n = len(rows)
    d1 = lag[1].astype(np.float64)
    csum = np.concatenate([[0.0], np.cumsum(d1)])
    idx = np.arange(n)
    out: list[tuple[float, int, int]] = []
    for h in SCALES:
        if n <= 4 * h:
            continue
        across = _at(lag[2 * h], idx + h)  # frame m-h against m+h
        beside = np.maximum(_at(lag[h], idx - h), _at(lag[h], idx + 2 * h))
        ratio = across / np.maximum(beside, 1.0)
        inside = (idx >= 2 * h) & (idx + 2 * h < n)
        ok = inside & (ratio >= GRADUAL_RATIO) & (across >= GRADUAL_MIN_CHANGE)
        for m in np.flatnonzero(ok).tolist():
            window = d1[m - h + 1 : m + h + 1]
            path = csum[m + h + 1] - csum[m - h + 1]
            mean = path / (2 * h)
            if window.max() > PEAK_MAX * max(mean, 1e-6):
                continue  # one frame carries the change: a cut (or a flash), not a transition
            between = rows[m + h, _BETWEEN_COL[h]] / max(across[m], 1e-6)
            monotone = across[m] / max(path, 1e-6)
            if between <= BETWEEN_MAX and monotone >= MONOTONE_MIN:
                out.append((float(ratio[m]), m, h))
                continue
            if ratio[m] >= FAST_RATIO:
                outside = np.concatenate(
                    [d1[m - 2 * h + 1 : m - h + 1], d1[m + h + 1 : m + 2 * h + 1]]
                )
                if mean >= FAST_RATE * max(float(np.median(outside)), 0.5):
                    out.append((float(ratio[m]), m, h))
    return out


def _place(d1: np.ndarray, m: int, h: int) -> Boundary:
    """The cut at half the window's excess change; the span from 5 % to 95 % of it."""
    lo, hi = m - h, m + h
    n = len(d1)
    beside = np.concatenate([d1[max(lo - h, 0) : lo], d1[hi + 1 : min(hi + h + 1, n)]])
    base = float(np.median(beside)) if len(beside) else 0.0
    excess = np.maximum(d1[lo + 1 : hi + 1] - base, 0.0)
    total = float(excess.sum())
    if total <= 0:
        return Boundary(m, m, m, "gradual")
    share = np.cumsum(excess) / total
    cut = lo + 1 + int(np.searchsorted(share, 0.5))
    first = lo + 1 + int(np.searchsorted(share, 0.05))
    last = lo + 1 + int(np.searchsorted(share, 0.95))
    return Boundary(cut, first, max(last + 1, cut), "gradual")


def find_boundaries(
    rows: np.ndarray, hard: np.ndarray
) -> tuple[list[Boundary], list[tuple[int, int]]]:
    """Every scene boundary (hard cuts, fades, dissolves/wipes) and the flashes left out.

    ``rows`` are the ``TransitionScorer`` rows of the whole video, ``hard`` the colour
    detector's candidate cut frames. One boundary per transition: where several signals see
    the same transition (a fade's near-black frames also spike the colour measure), a fade
    wins over a dissolve, which wins over a cut.
    """
    n = len(rows)
    lag = {k: rows[:, col].astype(np.float64) for k, col in _LAG_COL.items()}
    colour = rows[:, _COLOUR_COL]
    flash = np.zeros(n, dtype=bool)
    events: list[Boundary] = []
    for c in hard.tolist():
        if colour[c] < HARD_MIN_COLOUR or flash[c]:
            continue
        found = _flash_at(lag, c)
        if found:
            flash[found[0] : found[1] + 1] = True  # the flash frames and the frame that returns
            continue
        events.append(Boundary(c, c, c, "cut"))
    events += _fades(rows, lag, flash)
    taken = np.zeros(n + 1, dtype=bool)
    for e in events:
        taken[e.start : e.end + 1] = True
    for _, m, h in sorted(_gradual_candidates(lag, rows), reverse=True):
        if taken[m - h : m + h + 1].any():
            continue
        taken[m - h : m + h + 1] = True
        events.append(_place(lag[1], m, h))
    return _one_per_transition(events), _runs(flash)


_RANK = {"fade_black": 0, "fade_white": 0, "gradual": 1, "cut": 2}


def _one_per_transition(events: list[Boundary]) -> list[Boundary]:
    """Merge boundaries whose spans overlap or nearly touch (within 3 frames) into the best."""
    groups: list[list[Boundary]] = []
    reach = -1
    for e in sorted(events, key=lambda e: (e.start, e.cut)):
        if groups and e.start <= reach + 3:
            groups[-1].append(e)
            reach = max(reach, e.end)
        else:
            groups.append([e])
            reach = e.end
    return [min(g, key=lambda e: _RANK[e.kind]) for g in groups]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last] of every run of True (as plain ints, for JSON)."""
    return [(int(a), int(b)) for a, b in _solid_runs(mask)]
