"""What one decode of a clip's frames can make: the consumers of the media engine.

A consumer adds filters and ffmpeg outputs to the window's filter graph
(:mod:`heaters_media.artifacts`), then reads back what ffmpeg wrote, clip by clip. Two kinds:

- a ``Consumer`` gets one branch per clip, which sees its clip alone, timestamps from zero, so
  its frame numbers are the clip's (the sprite: one ``tile`` canvas per clip);
- a ``WindowConsumer`` gets one branch for the whole window, frame ``n`` of which is source
  frame ``window.first + n``, and one ffmpeg output (one encoder) whatever the number of clips
  (keyframes, review proxies). ffmpeg frees no encoder before the window ends, so encoders per
  clip would cap a window's clips by memory, and every extra window decodes again from its
  key frame (up to a GOP of 250 frames).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.keyframes import (
    STRATEGIES,
    Keyframe,
    KeyframesResult,
    keyframe_positions,
    square_pixels,
)
from heaters_media.probe import ProbeResult
from heaters_media.sprite import (
    JPEG_MAX_DIMENSION,
    SpriteResult,
    plan_sheet,
    sprite_select_expr,
)


@dataclass(frozen=True)
class ClipRange:
    """Frames ``[start, end)`` of the source; ``name`` names its outputs (a clip file's stem)."""

    index: int
    start: int
    end: int
    name: str

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass
class Source:
    """What every consumer needs to know about the source video."""

    path: Path
    info: ProbeResult
    fps: Fraction


@dataclass
class Branch:
    """A consumer's part of the graph for one clip: a chain from ``[in]`` to named outputs."""

    chain: str  # filters reading the clip's stream, ending in one or more ``[label]`` pads
    outputs: list[tuple[str, list[str]]]  # (pad label, ffmpeg output options incl. path)


class Consumer(Protocol):
    """One kind of artifact made from each clip's frames."""

    name: str

    def branch(self, src: Source, clip: ClipRange, folder: Path, pad: str) -> Branch:
        """Filters and outputs for ``clip`` writing into ``folder``; pads are prefixed ``pad``."""
        ...

    def collect(self, src: Source, clip: ClipRange, folder: Path, out_dir: Path) -> Any:
        """Check what ffmpeg wrote into ``folder``, move it into ``out_dir``, describe it."""
        ...

    def memory(self, src: Source, clip: ClipRange) -> int:
        """Bytes ffmpeg keeps for this clip's outputs until its window ends (an estimate)."""
        ...


class WindowConsumer(Protocol):
    """One kind of artifact made from each clip's frames by one branch for a whole window."""

    name: str

    def window_branch(
        self, src: Source, first: int, clips: Sequence[ClipRange], folder: Path, pad: str
    ) -> Branch:
        """Filters and outputs for ``clips`` (sorted by start) of a stream whose frame 0 is
        source frame ``first``, writing into ``folder``; pads are prefixed ``pad``."""
        ...

    def collect(self, src: Source, clip: ClipRange, folder: Path, out_dir: Path) -> Any:
        """Check what ffmpeg wrote into ``folder`` for ``clip``, move it into ``out_dir``."""
        ...

    def memory(self, src: Source, clip: ClipRange) -> int:
        """Bytes ffmpeg keeps for this clip until its window ends (an estimate)."""
        ...


def is_window_consumer(consumer: object) -> bool:
    """Whether ``consumer`` makes one branch per window (else one per clip)."""
    return callable(getattr(consumer, "window_branch", None))


# --------------------------------------------------------------------------------- consumers


def select_keyframes(
    clips: Sequence[ClipRange], strategy: str, first: int, folder: Path
) -> tuple[list[int], str]:
    """The source frames of ``clips``' keyframes (``strategy``), sorted, and the ``select``
    filter taking them out of a stream whose frame 0 is source frame ``first``. Which output
    frame is which source frame is written to ``folder/frames.json`` for ``collect``."""
    frames = sorted(
        {c.start + idx for c in clips for _, idx in keyframe_positions(c.frames, strategy)}
    )
    (folder / "frames.json").write_text(json.dumps(frames))
    return frames, "select=" + "+".join(f"eq(n\\,{f - first})" for f in frames)


def _nonempty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


@dataclass
class KeyframeConsumer:
    """JPEG frames at the strategy's positions (``<name>_<strategy>_<pct>.jpg``); a window
    consumer: one JPEG encoder for all its clips."""

    strategy: str = "multi"
    quality: int = 2
    name: str = "keyframes"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(
                f"unknown keyframe strategy {self.strategy!r}; use one of "
                f"{', '.join(sorted(STRATEGIES))}"
            )
        if not 1 <= self.quality <= 31:
            raise InvalidInputError(f"quality must be within 1..31, got {self.quality}")

    def _wanted(self, clip: ClipRange) -> list[int]:
        return sorted({idx for _, idx in keyframe_positions(clip.frames, self.strategy)})

    def window_branch(
        self, src: Source, first: int, clips: Sequence[ClipRange], folder: Path, pad: str
    ) -> Branch:
        # Every keyframe of the window's clips from one select and one JPEG encoder.
        frames, select = select_keyframes(clips, self.strategy, first, folder)
        pattern = str(folder).replace("%", "%%") + "/kf_%d.jpg"
        opts = ["-fps_mode", "passthrough", "-frames:v", str(len(frames)), "-q:v"]
        opts += [str(self.quality), "-start_number", "0", "-f", "image2", pattern]
        return Branch(f"{select}{square_pixels(src.info)}[{pad}]", [(pad, opts)])

    def memory(self, src: Source, clip: ClipRange) -> int:
        # The window's one JPEG encoder (~14 MB at 1280x720) is not per clip; a clip adds
        # only its selected frames in flight.
        return src.info.width * src.info.height

    def collect(self, src: Source, clip: ClipRange, folder: Path, out_dir: Path) -> KeyframesResult:
        wanted = self._wanted(clip)
        frames = json.loads((folder / "frames.json").read_text())
        # Files are numbered in the order ffmpeg wrote them: one missing anywhere in the window
        # would shift every later clip's keyframes onto the wrong file, so all must be there
        # (else the window fails, and its clips are retried one by one).
        lost = [f for k, f in enumerate(frames) if not _nonempty(folder / f"kf_{k}.jpg")]
        if lost:
            raise CorruptMediaError(
                f"{src.path.name}: could not decode frame(s) {lost[:8]} of the window "
                f"holding clip {clip.name}",
                path=str(src.path),
                frames=lost,
            )
        files = {f: k for k, f in enumerate(frames)}
        decoded = {idx: folder / f"kf_{files[clip.start + idx]}.jpg" for idx in wanted}
        keyframes = []
        for pct, idx in keyframe_positions(clip.frames, self.strategy):
            dest = out_dir / f"{clip.name}_{self.strategy}_{pct}.jpg"
            shutil.copyfile(decoded[idx], dest)
            keyframes.append(
                Keyframe(
                    path=str(dest),
                    pct=pct,
                    frame_index=idx,
                    timestamp=round(idx / float(src.fps), 6),
                )
            )
        return KeyframesResult(
            clip=clip.name,
            strategy=self.strategy,
            fps=src.info.fps,
            frame_count=clip.frames,
            width=src.info.display_size[0],
            height=src.info.display_size[1],
            keyframes=keyframes,
        )


@dataclass
class SpriteConsumer:
    """A sprite sheet (``sprite.jpg``) and its metadata (``sprite.json``) like make_sprite."""

    tile_width: int = 480
    max_fps: float = 24.0
    cols: int = 5
    quality: int = 4
    max_height: int = JPEG_MAX_DIMENSION
    name: str = "sprite"

    def __post_init__(self) -> None:
        if self.tile_width < 2 or self.cols < 1 or not self.max_fps > 0:
            raise InvalidInputError("need tile_width >= 2, cols >= 1 and max_fps > 0")
        if not 1 <= self.quality <= 31:
            raise InvalidInputError(f"quality must be within 1..31, got {self.quality}")
        if not 2 <= self.max_height <= JPEG_MAX_DIMENSION:
            raise InvalidInputError(f"max_height must be within 2..{JPEG_MAX_DIMENSION}")
        self.tile_width -= self.tile_width % 2

    def plan(self, src: Source, clip: ClipRange) -> tuple[SpriteResult, Fraction]:
        """The sheet :func:`make_sprite` would make of this clip, and its sampling rate."""
        return plan_sheet(
            src.info,
            clip.frames,
            round(clip.frames / float(src.fps), 6),
            tile_width=self.tile_width,
            max_fps=self.max_fps,
            cols=self.cols,
            max_height=self.max_height,
            names=("sprite.jpg", "sprite.json", clip.name),
        )

    def branch(self, src: Source, clip: ClipRange, folder: Path, pad: str) -> Branch:
        result, rate = self.plan(src, clip)
        # The frames make_sprite's ``fps`` filter would pick, chosen by number: an ``fps``
        # filter per clip in one graph is slow and, fed a trimmed stream, keeps producing
        # frames up to the end of the source (gigabytes in a window of many clips).
        # ``nb_frames`` makes ``tile`` emit the sheet on its last tile (the rest of the grid
        # black, as make_sprite's end-of-stream flush) instead of holding its canvas until
        # ffmpeg asks that output for a frame, which may be the end of the window.
        select = sprite_select_expr(clip.frames, src.fps, rate)
        chain = (
            f"select={select},scale={result.tile_width}:{result.tile_height}:flags=bicubic,"
            f"setsar=1,tile={result.cols}x{result.rows}:nb_frames={result.frame_count}[{pad}]"
        )
        opts = ["-frames:v", "1", "-q:v", str(self.quality), "-update", "1", "-f", "image2"]
        return Branch(chain, [(pad, [*opts, str(folder / "sprite.jpg")])])

    def memory(self, src: Source, clip: ClipRange) -> int:
        result, _ = self.plan(src, clip)
        return 7 * result.width * result.height

    def collect(self, src: Source, clip: ClipRange, folder: Path, out_dir: Path) -> SpriteResult:
        result, rate = self.plan(src, clip)
        made = folder / "sprite.jpg"
        if not made.is_file() or made.stat().st_size == 0:
            raise CorruptMediaError(
                f"{src.path.name}: no sprite for clip {clip.name}", path=str(src.path)
            )
        image, meta_path = out_dir / "sprite.jpg", out_dir / "sprite.json"
        shutil.copyfile(made, image)
        result.path, result.json_path = str(image), str(meta_path)
        meta = {k: v for k, v in result.to_dict().items() if k not in ("status", "json_path")}
        meta["image"] = image.name
        meta["tile_seconds"] = round(1 / float(rate), 6)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        return result
