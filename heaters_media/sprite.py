"""Sprite sheets for scrubbing: a grid of small frames sampled at a fixed rate, plus metadata.

One ffmpeg pass (``fps`` -> ``scale`` -> ``tile``) makes the sheet. Tile *k* (row-major) shows the
clip at time ``k / sprite_fps``, so a player maps a hover position to a tile with the metadata
written beside the image (same name, ``.json``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from heaters_media.errors import InvalidInputError
from heaters_media.probe import ProbeResult, probe_video
from heaters_media.results import Result
from heaters_media.tools import atomic_path, existing_file, ffmpeg_cmd, run, video_input_args

#: Largest dimension (pixels) a baseline JPEG can have, with a little margin to 65535.
JPEG_MAX_DIMENSION = 65500


@dataclass
class SpriteResult(Result):
    path: str
    json_path: str
    clip: str
    cols: int
    rows: int
    tile_width: int
    tile_height: int
    frame_count: int
    sprite_fps: float
    sprite_fps_fraction: str
    clip_fps: float
    clip_frame_count: int
    duration: float
    width: int
    height: int


def fps_filter_frames(clip_frames: int, clip_fps: Fraction, rate: Fraction) -> int:
    """Frames ffmpeg's ``fps=rate`` filter outputs for a CFR clip (it rounds the end to nearest)."""
    return math.floor(Fraction(clip_frames) * rate / clip_fps + Fraction(1, 2))


def sprite_frame_indices(clip_frames: int, clip_fps: Fraction, rate: Fraction) -> list[int]:
    """The clip frame each tile shows: what ffmpeg's ``fps=rate`` filter picks on a CFR clip.

    The filter rounds each frame's time to its output clock (to nearest, halves away from zero)
    and fills output tick k with the last frame whose rounded time is <= k; past the last frame
    it repeats it up to the rounded end (:func:`fps_filter_frames` tiles in all). Computing the
    choice lets one decode serve many clips with a ``select`` instead of an ``fps`` filter per
    clip (which, fed a trimmed stream, runs on to the end of the source).
    """
    n = fps_filter_frames(clip_frames, clip_fps, rate)
    step = rate / clip_fps
    rounded = [math.floor(i * step + Fraction(1, 2)) for i in range(clip_frames)]
    picks: list[int] = []
    i = 0
    for k in range(max(1, n)):
        while i + 1 < clip_frames and rounded[i + 1] <= k:
            i += 1
        picks.append(i)
    return picks


def sprite_select_expr(clip_frames: int, clip_fps: Fraction, rate: Fraction) -> str:
    """An ffmpeg ``select`` expression true exactly on :func:`sprite_frame_indices`.

    A list of ``eq(n,i)`` terms cannot be used: ffmpeg's expression parser gives up past about a
    hundred terms ("Cannot allocate memory"), and a minute of clip is 1,440 tiles. Frame i is the
    last one rounded to its tick when the next frame rounds to a later tick (or i is the last
    frame), and only ticks below the tile count are kept. Rounded ticks are computed in integers
    (``floor((2ip + q) / 2q)`` for a step p/q), exact in ffmpeg's doubles.
    """
    n = fps_filter_frames(clip_frames, clip_fps, rate)
    step = rate / clip_fps
    p2, q, q2 = 2 * step.numerator, step.denominator, 2 * step.denominator

    def tick(x: str) -> str:
        return f"floor(({x}*{p2}+{q})/{q2})"

    last = clip_frames - 1
    return f"lte({tick('n')}\\,{max(1, n) - 1})*(eq(n\\,{last})+gt({tick('(n+1)')}\\,{tick('n')}))"


def _rate(value: float | Fraction) -> Fraction:
    return Fraction(value).limit_denominator(1001)


def plan_sprite(
    clip_frames: int,
    clip_fps: Fraction,
    *,
    tile_width: int,
    tile_height: int,
    max_fps: float,
    cols: int,
    max_height: int,
) -> tuple[Fraction, int, int, int]:
    """(sprite fps, tiles, cols, rows) for a sheet that stays within ``max_height`` pixels."""
    rate = min(_rate(max_fps), clip_fps)
    n = fps_filter_frames(clip_frames, clip_fps, rate)
    if n < 1:  # a clip shorter than one sprite interval still gets one tile
        rate = clip_fps / clip_frames
        n = 1
    max_rows = max_height // tile_height
    if max_rows < 1:
        raise InvalidInputError(
            f"a tile {tile_height} px high does not fit a {max_height} px sheet"
        )
    max_tiles = max_rows * cols
    if n > max_tiles:
        rate = _rate(Fraction(max_tiles) * clip_fps / clip_frames)
        while fps_filter_frames(clip_frames, clip_fps, rate) > max_tiles:
            lower = rate * Fraction(999, 1000)
            # A rate below 1/1001 fps cannot be rounded to a small denominator: keep it exact
            # (rounding would return the same rate and loop forever).
            rate = _rate(lower) if _rate(lower) < rate else lower
        n = fps_filter_frames(clip_frames, clip_fps, rate)
    cols = min(cols, n)
    return rate, n, cols, math.ceil(n / cols)


def plan_sheet(
    info: ProbeResult,
    frames: int,
    duration: float,
    *,
    tile_width: int,
    max_fps: float,
    cols: int,
    max_height: int,
    names: tuple[str, str, str],
) -> tuple[SpriteResult, Fraction]:
    """The sheet of a clip of ``frames`` frames of a video like ``info``, and its sampling rate.

    Tiles keep the video's displayed aspect ratio (even height); ``names`` are the result's path,
    json_path and clip. Shared by :func:`make_sprite` and the one-pass engine's consumer, so
    both plan the same sheet.
    """
    if info.width <= 0 or info.height <= 0:
        raise InvalidInputError(f"{Path(names[2]).name} has no frame size")
    # The displayed shape (rotation applied, pixels made square), not the stored one: a
    # portrait phone video stored landscape would otherwise get squashed landscape tiles.
    shown_width, shown_height = info.display_size
    tile_height = max(2, 2 * round(tile_width * shown_height / shown_width / 2))
    clip_fps = Fraction(info.fps_fraction)
    rate, n, cols, rows = plan_sprite(
        frames,
        clip_fps,
        tile_width=tile_width,
        tile_height=tile_height,
        max_fps=max_fps,
        cols=cols,
        max_height=max_height,
    )
    width, height = cols * tile_width, rows * tile_height
    if width > JPEG_MAX_DIMENSION:
        raise InvalidInputError(
            f"sprite would be {width} px wide (JPEG limit "
            f"{JPEG_MAX_DIMENSION}); use fewer cols or narrower tiles"
        )
    result = SpriteResult(
        path=names[0],
        json_path=names[1],
        clip=names[2],
        cols=cols,
        rows=rows,
        tile_width=tile_width,
        tile_height=tile_height,
        frame_count=n,
        sprite_fps=round(float(rate), 6),
        sprite_fps_fraction=f"{rate.numerator}/{rate.denominator}",
        clip_fps=info.fps,
        clip_frame_count=frames,
        duration=duration,
        width=width,
        height=height,
    )
    return result, rate


def _check_request(
    out: Path, tile_width: int, max_fps: float, cols: int, quality: int, max_height: int
) -> None:
    """Reject an impossible sprite request before any work."""
    if out.suffix.lower() not in (".jpg", ".jpeg"):
        raise InvalidInputError(f"sprite must be a .jpg file, got {out.name}")
    if out.exists() and out.is_dir():
        raise InvalidInputError(f"sprite path is a folder: {out}")
    if tile_width < 2 or cols < 1 or not max_fps > 0 or not 1 <= quality <= 31:
        raise InvalidInputError(
            "need tile_width >= 2, cols >= 1, max_fps > 0 and quality within 1..31"
        )
    if not 2 <= max_height <= JPEG_MAX_DIMENSION:
        raise InvalidInputError(f"max_height must be within 2..{JPEG_MAX_DIMENSION}")


def _render(src: Path, out: Path, result: SpriteResult, rate: Fraction, quality: int) -> None:
    """Make the sheet planned in ``result`` and write it with its metadata, both atomically."""
    meta_path = Path(result.json_path)
    tile_width, tile_height = result.tile_width, result.tile_height
    cols, rows = result.cols, result.rows
    graph = (
        f"fps={rate.numerator}/{rate.denominator},"
        f"scale={tile_width}:{tile_height}:flags=bicubic,setsar=1,"
        f"tile={cols}x{rows}"
    )
    with atomic_path(out) as tmp_img, atomic_path(meta_path) as tmp_meta:
        run(
            ffmpeg_cmd(
                *video_input_args(src),
                "-vf",
                graph,
                "-frames:v",
                "1",
                "-q:v",
                str(quality),
                "-update",
                "1",
                "-f",
                "image2",
                str(tmp_img),
            ),
            what=f"sprite of {src.name}",
        )
        meta = {k: v for k, v in result.to_dict().items() if k not in ("status", "json_path")}
        meta["image"] = out.name
        meta["tile_seconds"] = round(1 / float(rate), 6)
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")


def make_sprite(
    clip: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    tile_width: int = 480,
    max_fps: float = 24.0,
    cols: int = 5,
    quality: int = 4,
    max_height: int = JPEG_MAX_DIMENSION,
) -> SpriteResult:
    """Write a sprite-sheet JPEG of ``clip`` to ``out_path`` and its metadata beside it (.json).

    Tiles are ``tile_width`` wide with the clip's aspect ratio (even height). The sprite samples
    ``min(max_fps, clip fps)`` frames per second, lowered further when needed so the sheet stays
    within ``max_height`` pixels (the JPEG limit); the rate actually used is reported.
    ``quality`` is ffmpeg's JPEG ``-q:v`` (2 best .. 31 worst).
    """
    src = existing_file(clip)
    out = Path(out_path)
    _check_request(out, tile_width, max_fps, cols, quality, max_height)
    tile_width -= tile_width % 2
    info = probe_video(src)
    result, rate = plan_sheet(
        info,
        info.frame_count,
        info.duration,
        tile_width=tile_width,
        max_fps=max_fps,
        cols=cols,
        max_height=max_height,
        names=(str(out), str(out.with_suffix(".json")), str(src)),
    )
    _render(src, out, result, rate, quality)
    return result
