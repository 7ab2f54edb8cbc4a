"""Review proxies: a small, frame-exact H.264 file of each clip from the artifacts' one decode.

Why: cutting full-quality clip files of footage whose cuts miss its key frames means encoding
every frame at full size (about five decodes of the file on two cores, ARCHITECTURE.md,
"Media engine"), and most clips of a library are skipped or archived in review. A reviewer
needs a clip that plays in the browser, starts and ends on the right frames and seeks at
once, not the master. So the proxy is one more consumer of the artifacts pass
(:mod:`heaters_media.artifacts`): the clips are scaled to ``height`` lines (never up) and
encoded with a short key-frame interval for seeking, no audio (the review page plays
muted). Full-quality files are cut from the source later, only for the clips that need them
(``python -m heaters_media split`` with those scenes).

It is a window consumer (:class:`heaters_media.consumers.WindowConsumer`): one x264 encoder per
window, a key frame forced on each clip's first frame and the segment muxer closing a file
there, the way :mod:`heaters_media.encode_pass` cuts. Every proxy must hold exactly its clip's
frames: counted from the file's own sample index (no process per clip) before it is handed
back, so a cut the segmenter moved fails the window (and its clips are retried one by one).
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from heaters_media.consumers import Branch, ClipRange, Source
from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.mp4index import sample_index_problem, video_sample_count
from heaters_media.results import Result
from heaters_media.tools import h264_args

#: Presets x264 accepts (the fast end; slower ones defeat the proxy's purpose but are allowed).
PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


@dataclass
class ProxyResult(Result):
    """One clip's review proxy: where it is, its size and frame count (equal to the clip's)."""

    clip: str
    path: str
    width: int
    height: int
    frames: int
    fps: float
    size_bytes: int


def proxy_size(display: tuple[int, int], height: int) -> tuple[int, int]:
    """The proxy's frame size: the displayed shape at ``height`` lines, never enlarged, both
    sides even (H.264 4:2:0 needs it)."""
    width, tall = display
    h = min(height, tall)
    w = round(width * h / tall)
    return max(2, w - w % 2), max(2, h - h % 2)


@dataclass
class ProxyConsumer:
    """``proxy.mp4`` of each clip: ``height`` lines, x264 ``preset``/``crf``, key frames every
    ``keyframe_seconds`` (the review page seeks within a clip).

    ``superfast``: on 2 cores it takes a quarter less CPU than ``veryfast`` for about 1.6x the
    bytes (700 kbit/s at 360 lines on the benchmark's edit), cheap for a file a reviewer
    watches once."""

    height: int = 360
    crf: int = 23
    preset: str = "superfast"
    keyframe_seconds: float = 1.0
    #: x264 threads of the window's encoder (windows already run side by side on the cores).
    threads: int = 2
    name: str = "proxy"

    def __post_init__(self) -> None:
        if not 16 <= self.height <= 4320:
            raise InvalidInputError(f"proxy height must be within 16..4320, got {self.height}")
        if not 0 <= self.crf <= 51:
            raise InvalidInputError(f"crf must be within 0..51, got {self.crf}")
        if self.preset not in PRESETS:
            raise InvalidInputError(f"unknown x264 preset {self.preset!r}")
        if not self.keyframe_seconds > 0:
            raise InvalidInputError("keyframe_seconds must be > 0")

    def window_branch(
        self, src: Source, first: int, clips: Sequence[ClipRange], folder: Path, pad: str
    ) -> Branch:
        # One encoder for the window: the stream from the first clip's first frame to the last
        # clip's end, a key frame forced on every clip boundary (by frame number: exact) and
        # the segment muxer closing a file there. A stretch between two clips that do not
        # touch becomes a file of its own, dropped by ``collect``.
        ordered = sorted(clips, key=lambda c: c.start)
        for a, b in itertools.pairwise(ordered):
            if b.start < a.end:
                # Refused before ffmpeg starts: the window's clips are then made one by one.
                raise InvalidInputError(
                    f"clips {a.name} and {b.name} overlap: one encode cannot hold both"
                )
        lo, hi = ordered[0].start, ordered[-1].end
        bounds = sorted(({c.start for c in ordered} | {c.end for c in ordered}) - {lo, hi})
        pieces = list(zip([lo, *bounds], [*bounds, hi], strict=True))
        (folder / "pieces.json").write_text(json.dumps(pieces))
        width, height = proxy_size(src.info.display_size, self.height)
        gop = max(1, round(float(src.fps) * self.keyframe_seconds))
        # ``-frames:v``: ffmpeg 5.1 keeps decoding for an output until its frame limit or the
        # end of the input, whatever its filters say; without it every window decodes to the
        # end of the file.
        opts = ["-fps_mode", "passthrough", "-frames:v", str(hi - lo)]
        opts += [*h264_args(self.preset, self.crf), "-threads", str(self.threads)]
        opts += ["-g", str(gop), "-an"]
        if bounds:
            forced = "+".join(f"eq(n,{b - lo})" for b in bounds)  # an option: no escaping
            opts += ["-force_key_frames", f"expr:{forced}"]
            opts += ["-f", "segment", "-segment_frames", ",".join(str(b - lo) for b in bounds)]
        else:
            opts += ["-f", "segment", "-segment_time", "1000000000"]  # one piece: never split
        opts += ["-reset_timestamps", "1", "-segment_format", "mp4"]
        opts += ["-segment_format_options", "movflags=+faststart"]
        opts += [str(folder).replace("%", "%%") + "/seg_%06d.mp4"]
        chain = (
            f"trim=start_frame={lo - first}:end_frame={hi - first},setpts=PTS-STARTPTS,"
            f"scale={width}:{height}:flags=bicubic,setsar=1[{pad}]"
        )
        return Branch(chain, [(pad, opts)])

    def memory(self, src: Source, clip: ClipRange) -> int:
        # The window's one x264 encoder (~17 MB at 640x360) is not per clip.
        return 0

    def collect(self, src: Source, clip: ClipRange, folder: Path, out_dir: Path) -> ProxyResult:
        pieces = [tuple(p) for p in json.loads((folder / "pieces.json").read_text())]
        written = len(list(folder.glob("seg_*.mp4")))
        if written != len(pieces):  # a cut missed or added: files would belong to neighbours
            raise CorruptMediaError(
                f"{src.path.name}: the proxy pass wrote {written} files for {len(pieces)} "
                f"pieces (clip {clip.name} among them)",
                path=str(src.path),
            )
        made = folder / f"seg_{pieces.index((clip.start, clip.end)):06d}.mp4"
        if not made.is_file() or made.stat().st_size == 0:
            raise CorruptMediaError(
                f"{src.path.name}: no review proxy for clip {clip.name}", path=str(src.path)
            )
        problem = sample_index_problem(made)
        frames = video_sample_count(made)
        if problem is not None or frames != clip.frames:
            raise CorruptMediaError(
                f"{src.path.name}: the review proxy of clip {clip.name} holds {frames} frames, "
                f"not {clip.frames}" + (f" ({problem})" if problem else ""),
                path=str(src.path),
                frames=[clip.start, clip.end],
            )
        dest = out_dir / "proxy.mp4"
        shutil.copyfile(made, dest)
        width, height = proxy_size(src.info.display_size, self.height)
        return ProxyResult(
            clip=clip.name,
            path=str(dest),
            width=width,
            height=height,
            frames=frames,
            fps=float(src.fps),
            size_bytes=dest.stat().st_size,
        )
