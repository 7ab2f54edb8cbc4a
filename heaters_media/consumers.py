"""What one decode of a clip's frames can make: the consumers of the media engine.

A consumer adds a chain of filters and ffmpeg outputs for each clip to the window's filter
graph (:mod:`heaters_media.artifacts`), then reads back what ffmpeg wrote. Each branch sees its
clip alone, timestamps from zero, so a consumer's frame numbers are the clip's.
"""

from __future__ import annotations

import json
import shutil
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


# --------------------------------------------------------------------------------- consumers


@dataclass
class KeyframeConsumer:
    """JPEG frames at the strategy's positions (``<name>_<strategy>_<pct>.jpg``)."""

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

    def branch(self, src: Source, clip: ClipRange, folder: Path, pad: str) -> Branch:
        wanted = self._wanted(clip)
        select = "+".join(f"eq(n\\,{i})" for i in wanted)
        pattern = str(folder).replace("%", "%%") + "/kf_%d.jpg"
        opts = ["-fps_mode", "passthrough", "-frames:v", str(len(wanted)), "-q:v"]
        opts += [str(self.quality), "-start_number", "0", "-f", "image2", pattern]
        return Branch(f"select={select}{square_pixels(src.info)}[{pad}]", [(pad, opts)])

    def memory(self, src: Source, clip: ClipRange) -> int:
        # A JPEG encoder and a frame pool at full size for each keyframe output.
        return 4 * src.info.width * src.info.height

    def collect(self, src: Source, clip: ClipRange, folder: Path, out_dir: Path) -> KeyframesResult:
        wanted = self._wanted(clip)
        decoded = {idx: folder / f"kf_{k}.jpg" for k, idx in enumerate(wanted)}
        missing = [i for i, p in decoded.items() if not p.is_file() or p.stat().st_size == 0]
        if missing:
            raise CorruptMediaError(
                f"{src.path.name}: could not decode frame(s) {missing} of clip {clip.name}",
                path=str(src.path),
                frames=[clip.start + i for i in missing],
            )
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
