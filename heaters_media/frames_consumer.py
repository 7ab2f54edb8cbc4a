"""Embeddings straight from the media engine's decode: the keyframes' frames, no JPEG between.

A window consumer (:mod:`heaters_media.consumers`): one branch selects the same frames as
:class:`~heaters_media.consumers.KeyframeConsumer` (the strategy's 25/50/75 % or midpoint frame
of each clip), scales them down to what the model's preprocessing needs (area averaging; the
short side at least twice the model's resize target, as the feed's reduced JPEG decode keeps)
and writes them as raw RGB into one file of the window. ``collect`` embeds the window's frames
in batches with a :class:`~heaters_media.embed_frames.FrameEmbedder` the first time one of its
clips is collected, and hands each clip its rows: a few vectors per clip are all that outlive
the window (the raw file goes with the window's folder), so memory does not grow with the video.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from heaters_media.consumers import Branch, ClipRange, Source, select_keyframes
from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.keyframes import STRATEGIES, keyframe_positions, square_pixels
from heaters_media.results import Result

if TYPE_CHECKING:  # OpenCV and the model code load only when an embedding is asked for
    from heaters_media.embed_frames import FrameEmbedder


@dataclass
class FrameVectors(Result):
    """One clip's keyframe frames embedded: a vector per keyframe position, in time order."""

    clip: str
    model: str
    strategy: str  # the keyframe strategy: which frames (multi: 25/50/75 %, midpoint: 50 %)
    width: int  # the size the frames were embedded from
    height: int
    pcts: list[int]
    frame_indices: list[int]
    vectors: list[list[float]]
    #: The model failed on the window's frames ("Type: message"): no vectors, and the clip's
    #: other artifacts are unaffected (an embedding here is a by-product of their decode).
    error: str | None = None

    def array(self) -> np.ndarray:
        return np.asarray(self.vectors, dtype=np.float32)


def frame_size(width: int, height: int, short: int) -> tuple[int, int]:
    """``(width, height)`` scaled so the short side is at most ``short`` (0: unchanged)."""
    low = min(width, height)
    if short <= 0 or low <= short:
        return width, height
    return max(1, round(width * short / low)), max(1, round(height * short / low))


@dataclass
class EmbedConsumer:
    """Vectors of each clip's keyframe frames (``FrameVectors``) from the window's decode."""

    embedder: FrameEmbedder
    strategy: str = "multi"
    name: str = "embedding"
    #: Vectors of a window already embedded (or the model's error), until its last clip is
    #: collected.
    _windows: dict[str, tuple[np.ndarray, dict[int, int]] | str] = field(
        default_factory=dict, repr=False, compare=False
    )
    _left: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(
                f"unknown keyframe strategy {self.strategy!r}; use one of "
                f"{', '.join(sorted(STRATEGIES))}"
            )

    def _positions(self, clip: ClipRange) -> list[tuple[int, int]]:
        return keyframe_positions(clip.frames, self.strategy)

    def _size(self, src: Source) -> tuple[int, int]:
        width, height = src.info.display_size
        return frame_size(width, height, self.embedder.frame_short_side())

    def window_branch(
        self, src: Source, first: int, clips: Sequence[ClipRange], folder: Path, pad: str
    ) -> Branch:
        frames, select = select_keyframes(clips, self.strategy, first, folder)
        with self._lock:
            self._left[str(folder)] = len(clips)
        # The keyframe's own frame first (upright, square pixels: what its JPEG holds), then
        # area-averaged down to the size the model needs.
        width, height = self._size(src)
        scale = square_pixels(src.info)
        if (width, height) != src.info.display_size:
            scale += f",scale={width}:{height}:flags=area"
        chain = f"{select}{scale},format=rgb24[{pad}]"
        opts = ["-fps_mode", "passthrough", "-frames:v", str(len(frames))]
        opts += ["-f", "rawvideo", "-pix_fmt", "rgb24", str(folder / "frames.rgb")]
        return Branch(chain, [(pad, opts)])

    def memory(self, src: Source, clip: ClipRange) -> int:
        width, height = self._size(src)
        return 3 * width * height  # frames in flight; the file holds the rest

    def _window_vectors(
        self, src: Source, clip: ClipRange, folder: Path
    ) -> tuple[np.ndarray, dict[int, int]] | str:
        """The window's vectors (embedded on its first clip's collect) and frame -> row; or
        the model's error. Frames ffmpeg did not write raise CorruptMediaError (the window's
        decode failed: its clips are retried one by one, as for keyframes)."""
        key = str(folder)
        known = self._windows.get(key)
        if known is not None:
            return known
        frames: list[int] = json.loads((folder / "frames.json").read_text())
        width, height = self._size(src)
        raw = folder / "frames.rgb"
        size = raw.stat().st_size if raw.is_file() else 0
        if size != len(frames) * width * height * 3:
            got = size // (width * height * 3)
            raise CorruptMediaError(
                f"{src.path.name}: {got} of the {len(frames)} frames of the window holding "
                f"clip {clip.name} could be decoded",
                path=str(src.path),
            )
        data = np.memmap(raw, dtype=np.uint8, mode="c", shape=(len(frames), height, width, 3))
        step = self.embedder.batch_size
        try:
            vectors = np.concatenate(
                [
                    self.embedder(list(data[i : i + step]), src.info.display_size)
                    for i in range(0, len(frames), step)
                ]
            )
            cached: tuple[np.ndarray, dict[int, int]] | str = (
                vectors,
                {f: row for row, f in enumerate(frames)},
            )
        except Exception as exc:  # the model's problem, not the clip's
            cached = f"{type(exc).__name__}: {exc}"
        del data
        self._windows[key] = cached
        return cached

    def collect(self, src: Source, clip: ClipRange, folder: Path, out_dir: Path) -> FrameVectors:
        made = self._window_vectors(src, clip, folder)
        key = str(folder)
        with self._lock:
            self._left[key] = self._left.get(key, 1) - 1
            if self._left[key] <= 0:
                self._left.pop(key, None)
                self._windows.pop(key, None)
        positions = self._positions(clip)
        width, height = self._size(src)
        result = FrameVectors(
            clip=clip.name,
            model=self.embedder.name,
            strategy=self.strategy,
            width=width,
            height=height,
            pcts=[pct for pct, _ in positions],
            frame_indices=[idx for _, idx in positions],
            vectors=[],
        )
        if isinstance(made, str):
            result.error = made
        else:
            vectors, rows = made
            result.vectors = [vectors[rows[clip.start + idx]].tolist() for _, idx in positions]
        return result
