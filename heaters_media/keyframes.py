"""Representative JPEG frames of a clip (for review thumbnails and image embeddings).

All requested frames come out of one ffmpeg decode of the clip: a ``select`` filter keeps only the
wanted frame numbers, so the cost is one pass no matter how many frames are asked for.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.probe import ProbeResult, probe_video
from heaters_media.results import Result
from heaters_media.tools import (
    existing_file,
    ffmpeg_cmd,
    publish,
    run,
    staging_dir,
    video_input_args,
)

#: Positions (percent of the clip) of each strategy.
STRATEGIES: dict[str, tuple[int, ...]] = {"midpoint": (50,), "multi": (25, 50, 75)}


@dataclass
class Keyframe(Result):
    path: str
    pct: int
    frame_index: int
    timestamp: float


@dataclass
class KeyframesResult(Result):
    clip: str
    strategy: str
    fps: float
    frame_count: int
    width: int
    height: int
    keyframes: list[Keyframe] = field(default_factory=list)


def keyframe_positions(frame_count: int, strategy: str) -> list[tuple[int, int]]:
    """(pct, frame index) pairs of ``strategy`` for a clip of ``frame_count`` frames."""
    if strategy not in STRATEGIES:
        raise InvalidInputError(
            f"unknown keyframe strategy {strategy!r}; use one of {', '.join(sorted(STRATEGIES))}"
        )
    return [(pct, min(frame_count - 1, frame_count * pct // 100)) for pct in STRATEGIES[strategy]]


def square_pixels(info: ProbeResult) -> str:
    """Filters (with a leading comma, or nothing) giving a JPEG the clip's displayed shape.

    ffmpeg already turns rotated frames upright; an anamorphic clip (pixels not square) is
    also scaled to square pixels, since browsers ignore a JPEG's pixel aspect. The JPEG is then
    ``info.display_size``, the size its metadata reports.
    """
    if info.sar == 1:
        return ""
    width, height = info.display_size
    return f",scale={width}:{height},setsar=1"


def extract_keyframes(
    clip: str | os.PathLike[str],
    strategy: str = "midpoint",
    out_dir: str | os.PathLike[str] | None = None,
    *,
    quality: int = 2,
) -> KeyframesResult:
    """Write JPEGs ``<clip stem>_<strategy>_<pct>.jpg`` into ``out_dir`` (default: beside the clip).

    ``quality`` is ffmpeg's JPEG ``-q:v`` (2 best .. 31 worst). The frame at p % of a clip of n
    frames is frame ``floor(n * p / 100)`` (its time: index / fps).
    """
    if strategy not in STRATEGIES:
        raise InvalidInputError(
            f"unknown keyframe strategy {strategy!r}; use one of {', '.join(sorted(STRATEGIES))}"
        )
    if not 1 <= quality <= 31:
        raise InvalidInputError(f"quality must be within 1..31, got {quality}")
    src = existing_file(clip)
    info = probe_video(src)
    out = Path(out_dir) if out_dir is not None else src.parent
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"output folder is a file: {out}")
    positions = keyframe_positions(info.frame_count, strategy)
    wanted = sorted({idx for _, idx in positions})
    select = "+".join(f"eq(n\\,{i})" for i in wanted)

    with staging_dir(out) as stage:
        run(
            ffmpeg_cmd(
                *video_input_args(src),
                "-vf",
                f"select={select}{square_pixels(info)}",
                "-fps_mode",
                "passthrough",
                "-frames:v",
                str(len(wanted)),
                "-q:v",
                str(quality),
                "-start_number",
                "0",
                "-f",
                "image2",
                str(stage).replace("%", "%%") + "/frame_%d.jpg",
            ),
            what=f"keyframes of {src.name}",
        )
        decoded = {idx: stage / f"frame_{k}.jpg" for k, idx in enumerate(wanted)}
        missing = [idx for idx, p in decoded.items() if not p.is_file() or p.stat().st_size == 0]
        if missing:
            raise CorruptMediaError(
                f"{src.name}: could not decode frame(s) {missing} of {info.frame_count}",
                path=str(src),
                frames=missing,
            )
        staged: list[Path] = []
        keyframes = []
        for pct, idx in positions:
            name = stage / f"{src.stem}_{strategy}_{pct}.jpg"
            shutil.copyfile(decoded[idx], name)
            staged.append(name)
            keyframes.append(
                Keyframe(
                    path=str(out / name.name),
                    pct=pct,
                    frame_index=idx,
                    timestamp=round(idx / info.fps, 6),
                )
            )
        publish(staged, out)
    return KeyframesResult(
        clip=str(src),
        strategy=strategy,
        fps=info.fps,
        frame_count=info.frame_count,
        width=info.display_size[0],
        height=info.display_size[1],
        keyframes=keyframes,
    )
