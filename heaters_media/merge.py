"""Merging two clips into one during review, frame-accurately.

Clips with identical codec parameters (same encoder settings, as the clips of one split usually
have) are joined by stream copy through the concat demuxer; anything else is re-encoded with the
concat filter. Either way the result is checked packet by packet to hold exactly the frames of
both inputs, and written atomically.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from heaters_media.errors import InvalidInputError, ToolFailedError
from heaters_media.probe import ProbeResult, clip_is_exact, ffprobe_json, probe_video
from heaters_media.results import Result
from heaters_media.split import AUDIO_BITRATE, Method
from heaters_media.tools import (
    atomic_path,
    existing_file,
    ffmpeg_cmd,
    h264_args,
    run,
    stream_map_args,
)


@dataclass
class MergeResult(Result):
    path: str
    a: str
    b: str
    a_frames: int
    b_frames: int
    frame_count: int
    fps: float
    method: Method
    size: int
    seconds: float


def _stream_params(path: Path) -> dict[str, Any]:
    """Codec parameters that must match for two files to be concatenated by stream copy."""
    info = ffprobe_json(
        path,
        ["-show_streams", "-show_data_hash", "md5"],
        what=f"reading stream parameters of {path.name}",
    )
    keys_v = (
        "codec_name",
        "profile",
        "level",
        "width",
        "height",
        "pix_fmt",
        "r_frame_rate",
        "avg_frame_rate",
        "time_base",
        "sample_aspect_ratio",
        "color_range",
        "color_space",
        "field_order",
        "has_b_frames",
        "extradata_hash",
    )
    keys_a = (
        "codec_name",
        "profile",
        "sample_rate",
        "channels",
        "channel_layout",
        "sample_fmt",
        "time_base",
        "extradata_hash",
    )
    streams = info.get("streams") or []
    video = [s for s in streams if s.get("codec_type") == "video"]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    return {
        "streams": [s.get("codec_type") for s in streams],
        "video": {k: video[0].get(k) for k in keys_v} if video else None,
        "audio": {k: audio[0].get(k) for k in keys_a} if audio else None,
    }


def _concat_list_line(path: Path) -> str:
    escaped = str(path.resolve()).replace("'", "'\\''")
    return f"file '{escaped}'\n"


def _merge_copy(pa: Path, pb: Path, ia: ProbeResult, out: Path, want: int) -> bool:
    """Join ``pa`` and ``pb`` into ``out`` by stream copy; False when that is not exact."""
    with tempfile.TemporaryDirectory(prefix="heaters-merge-") as tdir:
        listing = Path(tdir) / "list.txt"
        listing.write_text(_concat_list_line(pa) + _concat_list_line(pb))
        try:
            run(
                ffmpeg_cmd(
                    "-f",
                    "concat",
                    "-safe",
                    "0",
                    "-i",
                    str(listing),
                    *stream_map_args(ia.has_audio),
                    "-c",
                    "copy",
                    "-movflags",
                    "+faststart",
                    "-f",
                    "mp4",
                    str(out),
                ),
                what=f"concat {pa.name} + {pb.name}",
            )
            # The concat demuxer shifts everything by the AAC priming delay (~23 ms),
            # so the video may start that late (A/V sync kept); under a frame is fine.
            if clip_is_exact(out, want, 1 / Fraction(ia.fps_fraction)):
                return True
        except ToolFailedError:
            pass
    return False


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """The largest even size within ``size`` (H.264 yuv420p needs even sides), at least 2x2."""
    return max(2, size[0] - size[0] % 2), max(2, size[1] - size[1] % 2)


def _merge_encode(
    pa: Path,
    pb: Path,
    ia: ProbeResult,
    ib: ProbeResult,
    out: Path,
    *,
    crf: int,
    preset: str,
    threads: int,
) -> None:
    """Re-encode ``pa`` then ``pb`` into ``out`` with the concat filter (see merge_clips)."""
    w, h = _even(ia.display_size)
    rate = Fraction(ia.fps_fraction)
    chains = []
    for i, info in enumerate((ia, ib)):
        # Frames arrive upright (ffmpeg applies rotation); make their pixels square, then fit
        # them inside a's frame with their aspect kept, padding the rest with black.
        sw, sh = info.display_size
        square = f"scale={sw}:{sh},setsar=1," if info.sar != 1 else ""
        chains.append(
            f"[{i}:v:0]{square}scale={w}:{h}:force_original_aspect_ratio=decrease,"
            f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p,setpts=PTS-STARTPTS[v{i}]"
        )
    audio = ia.has_audio or ib.has_audio
    if audio:
        rate_hz = ia.audio_sample_rate or ib.audio_sample_rate or 48000
        layout = "stereo" if max(ia.audio_channels or 0, ib.audio_channels or 0) >= 2 else "mono"
        for i, info in enumerate((ia, ib)):
            dur = info.frame_count / info.fps
            src = f"[{i}:a:0]" if info.has_audio else f"anullsrc=r={rate_hz}:cl={layout},"
            if info.has_audio:
                src += "asetpts=PTS-STARTPTS,"
            chains.append(
                f"{src}aformat=sample_rates={rate_hz}:channel_layouts={layout},"
                f"apad,atrim=end={dur:.6f},asetpts=PTS-STARTPTS[a{i}]"
            )
        graph = ";".join(chains) + ";[v0][a0][v1][a1]concat=n=2:v=1:a=1[vc][a]"
    else:
        graph = ";".join(chains) + ";[v0][v1]concat=n=2:v=1:a=0[vc]"
    graph += f";[vc]setpts=N/({rate.numerator}/{rate.denominator}*TB)[v]"
    args = [
        "-i",
        str(pa),
        "-i",
        str(pb),
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-fps_mode",
        "passthrough",
        *h264_args(preset, crf),
        "-threads",
        str(threads),
    ]
    if audio:
        args += ["-map", "[a]", "-c:a", "aac", "-b:a", AUDIO_BITRATE]
    args += ["-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out)]
    run(ffmpeg_cmd(*args), what=f"merge (encode) {pa.name} + {pb.name}")


def merge_clips(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    crf: int = 20,
    preset: str = "veryfast",
    threads: int | None = None,
    allow_copy: bool = True,
) -> MergeResult:
    """Concatenate clip ``a`` then clip ``b`` into ``out_file`` with exactly a + b frames.

    Clips with identical codec parameters (same encoder settings, as the clips of one split
    usually have) are joined by stream copy through the concat demuxer; anything else is
    re-encoded with the concat filter: timestamps laid out at ``a``'s frame rate, silence where
    a clip has no audio.

    Clips of different shapes (another size, portrait next to landscape, a rotated phone clip,
    anamorphic pixels) are never stretched: the merged clip takes ``a``'s frame as it is shown
    (rotation applied, square pixels, even sides), and ``b`` is scaled to fit inside it with its
    own aspect ratio kept, the rest padded black (letterbox or pillarbox). That is what a
    player does with a clip of another shape, and it keeps ``a``, the clip the reviewer picked
    first, exactly as it was; refusing would leave the reviewer no way to merge such clips.
    """
    started = time.monotonic()
    pa, pb = existing_file(a), existing_file(b)
    dst = Path(out_file)
    if dst.suffix.lower() != ".mp4":
        raise InvalidInputError(f"merged clip must be an .mp4 file, got {dst.name}")
    if dst.resolve() in (pa.resolve(), pb.resolve()):
        raise InvalidInputError("merge cannot write over one of its inputs")
    ia, ib = probe_video(pa), probe_video(pb)
    want = ia.frame_count + ib.frame_count
    params_a, params_b = _stream_params(pa), _stream_params(pb)
    can_copy = (
        allow_copy
        and params_a == params_b
        and ia.video_codec == "h264"
        and ia.pix_fmt == "yuv420p"
        and ia.audio_codec in (None, "aac")
        and ia.rotation == ib.rotation  # one display matrix would turn the other clip
        and not ia.is_vfr
        and not ib.is_vfr
    )
    threads = threads or os.cpu_count() or 2
    method: Method = "encode"
    with atomic_path(dst) as tmp:
        if can_copy and _merge_copy(pa, pb, ia, tmp, want):
            method = "copy"
        if method == "encode":
            _merge_encode(pa, pb, ia, ib, tmp, crf=crf, preset=preset, threads=threads)
            if not clip_is_exact(tmp, want):
                raise ToolFailedError(f"merging {pa.name} + {pb.name} did not give {want} frames")
        size = tmp.stat().st_size
    return MergeResult(
        path=str(dst),
        a=str(pa),
        b=str(pb),
        a_frames=ia.frame_count,
        b_frames=ib.frame_count,
        frame_count=want,
        fps=ia.fps,
        method=method,
        size=size,
        seconds=round(time.monotonic() - started, 3),
    )
