"""Keyframes, sprite sheets and review proxies of many clips from one decode of their source.

Cutting a video makes clip files, and the first engine decoded each clip file again, once for its
keyframes and once for its sprite: two decodes and two process start-ups per clip. Here a clip is
just the frame range ``[start, end)`` of the source, and every consumer of a clip (keyframes,
sprite, review proxy, and any later one) is a branch of one ffmpeg filter graph fed by a single
decode:

    source --decode--> split --trim(clip 0)--> fps -> scale -> tile -> sprite JPEG
                             |--trim(clip 1)--> ...
                             |--select(every clip's 25/50/75 % frame) -> JPEGs
                             \\--trim(window) -> scale -> x264, key frame at each clip -> segments

A per-clip branch trims its clip out of the stream and restarts its timestamps at zero
(``setpts``), so its filters see exactly what they saw on the clip file: same frame numbers,
same timestamps, hence the same sprite tiles as :func:`make_sprite`. A window branch
(keyframes, proxies) picks frames by their number in the window, so its keyframes are those of
:func:`extract_keyframes`, without the clip file (tested against both).

The clips are processed in *windows* of consecutive clips; a window's ffmpeg seeks straight to
the key frame at or before its first clip (nothing before it is decoded), so windows decode
side by side on several cores and the whole video is still decoded about once. A consumer is a
small class behind ``Consumer`` or ``WindowConsumer`` in :mod:`heaters_media.consumers` (the way
PySceneDetect's detectors and video2dataset's subsamplers are): it contributes filter chains
and ffmpeg outputs, then reads what ffmpeg wrote for each clip.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import cast

from heaters_media.consumers import (
    ClipRange,
    Consumer,
    KeyframeConsumer,
    Source,
    SpriteConsumer,
    WindowConsumer,
    is_window_consumer,
)
from heaters_media.errors import InvalidInputError, MediaError
from heaters_media.frames_consumer import EmbedConsumer, FrameVectors
from heaters_media.keyframes import KeyframesResult
from heaters_media.probe import Packets, probe_video, read_packets
from heaters_media.progress import ProgressFn
from heaters_media.proxy import ProxyConsumer, ProxyResult
from heaters_media.results import Result
from heaters_media.sprite import (
    SpriteResult,
)
from heaters_media.tools import existing_file, ffmpeg_cmd, run

#: A window's ffmpeg gets at most this many clips (each clip is a few filters and outputs).
MAX_CLIPS_PER_WINDOW = 48
#: Bytes a window's ffmpeg may keep for its clips' outputs (sprite canvases and JPEG encoders
#: stay allocated until the window ends: ~7 bytes per sheet pixel, measured). Two windows run
#: at once on two cores: about 1.1 GB of ffmpeg in all, whatever the length of the video.
WINDOW_MEMORY_BUDGET = 480 * 1024 * 1024


# ------------------------------------------------------------------------------------ windows


@dataclass(frozen=True)
class Window:
    """Consecutive clips decoded by one ffmpeg, from the key frame ``first`` (at ``seek`` s)."""

    clips: tuple[ClipRange, ...]
    first: int
    seek: float | None


def plan_windows(
    clips: Sequence[ClipRange],
    pk: Packets | None,
    parts: int,
    max_clips: int,
    *,
    cost: Callable[[ClipRange], int] | None = None,
    budget: int = WINDOW_MEMORY_BUDGET,
) -> list[Window]:
    """Group clips (by start) into about ``parts`` windows of similar frame counts.

    A window also closes at ``max_clips`` clips or when the memory its ffmpeg keeps per clip
    (``cost``: bytes, see :meth:`Consumer.memory`) would pass ``budget``: ffmpeg frees a
    branch's buffers only when the whole window ends. Without usable packets (``pk`` None)
    every window decodes from the start of the file: still one process per window, but no
    seek that could land on the wrong frame.
    """
    ordered = sorted(clips, key=lambda c: c.start)
    total = sum(c.frames for c in ordered) or 1
    parts = max(1, parts)
    # As many windows as the memory budget and the clip cap need, rounded up to a multiple of
    # ``parts`` and of equal frame counts: windows run ``parts`` at a time, and a last round
    # of one window would leave the other cores idle while it decodes.
    held_total = sum(cost(c) for c in ordered) if cost is not None else 0
    needed = max(parts, math.ceil(held_total / budget), math.ceil(len(ordered) / max_clips))
    share = max(1, math.ceil(total / (math.ceil(needed / parts) * parts)))
    groups: list[list[ClipRange]] = [[]]
    frames = held = 0
    for clip in ordered:
        need = cost(clip) if cost is not None else 0
        full = frames >= share or len(groups[-1]) >= max_clips or held + need > budget
        if groups[-1] and full:
            groups.append([])
            frames = held = 0
        groups[-1].append(clip)
        frames += clip.frames
        held += need
    keys = [i for i, k in enumerate(pk.keys) if k] if pk is not None else []
    windows = []
    for group in groups:
        start = group[0].start
        first = max((k for k in keys if k <= start), default=0)
        seek = None
        if pk is not None and first > 0:
            # Half a millisecond past the key frame: the backward seek lands exactly on it.
            seek = float(pk.time(first)) + 0.0005
        windows.append(Window(tuple(group), first, seek))
    return windows


def _consumer_folder(folder: Path, index: int, consumer: Consumer | WindowConsumer) -> Path:
    """Where ffmpeg writes ``consumer``'s files for the window's clip ``index``."""
    if is_window_consumer(consumer):
        return folder / "window" / consumer.name
    return folder / f"{index}" / consumer.name


def _window_command(
    src: Source, win: Window, consumers: Sequence[Consumer | WindowConsumer], folder: Path
) -> list[str]:
    """One ffmpeg command: decode from the window's key frame, one branch per clip x per-clip
    consumer and one per window consumer."""
    per_clip = [c for c in consumers if not is_window_consumer(c)]
    whole = [c for c in consumers if is_window_consumer(c)]
    clip_pads = [f"c{i}" for i in range(len(win.clips))] if per_clip else []
    pads = clip_pads + [f"w{j}" for j in range(len(whole))]
    lines = [f"[0:v]split={len(pads)}" + "".join(f"[{p}]" for p in pads)]
    outputs: list[str] = []
    for j, consumer in enumerate(whole):
        sub = _consumer_folder(folder, 0, consumer)
        sub.mkdir(parents=True, exist_ok=True)
        br = cast(WindowConsumer, consumer).window_branch(src, win.first, win.clips, sub, f"v{j}")
        lines.append(f"[w{j}]{br.chain}")
        for label, opts in br.outputs:
            outputs += ["-map", f"[{label}]", *opts]
    for i, clip in enumerate(win.clips if per_clip else ()):
        a, b = clip.start - win.first, clip.end - win.first
        fan_pads = [f"c{i}_{j}" for j in range(len(per_clip))]
        fan = f"split={len(per_clip)}" + "".join(f"[{p}]" for p in fan_pads)
        lines.append(f"[c{i}]trim=start_frame={a}:end_frame={b},setpts=PTS-STARTPTS,{fan}")
        for j, consumer in enumerate(per_clip):
            sub = _consumer_folder(folder, i, consumer)
            sub.mkdir(parents=True, exist_ok=True)
            br = cast(Consumer, consumer).branch(src, clip, sub, f"o{i}_{j}")
            lines.append(f"[{fan_pads[j]}]{br.chain}")
            for label, opts in br.outputs:
                outputs += ["-map", f"[{label}]", *opts]
    script = folder / "graph.txt"
    script.write_text(";\n".join(lines) + "\n")
    args: list[str] = []
    if win.seek is not None:
        args += ["-noaccurate_seek", "-ss", f"{win.seek:.6f}"]
    args += ["-i", str(src.path), "-filter_complex_script", str(script), *outputs]
    return ffmpeg_cmd(*args)


@dataclass
class ClipArtifacts(Result):
    """What the consumers made of one clip (``None`` where the clip failed)."""

    index: int
    name: str
    start_frame: int
    end_frame: int
    keyframes: KeyframesResult | None = None
    sprite: SpriteResult | None = None
    proxy: ProxyResult | None = None
    embedding: FrameVectors | None = None
    error: str | None = None


@dataclass
class ArtifactsResult(Result):
    source: str
    clips: list[ClipArtifacts] = field(default_factory=list)
    windows: int = 0
    processes: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> list[ClipArtifacts]:
        return [c for c in self.clips if c.error is not None]


def _run_window(
    src: Source, win: Window, consumers: Sequence[Consumer | WindowConsumer], out_dir: Path
) -> list[ClipArtifacts]:
    """Decode one window and collect every clip's artifacts into ``out_dir/<clip name>/``."""
    with tempfile.TemporaryDirectory(prefix=".window-", dir=out_dir) as tmp:
        folder = Path(tmp)
        run(
            _window_command(src, win, consumers, folder),
            what=f"artifacts of frames [{win.clips[0].start}, {win.clips[-1].end}) of "
            f"{src.path.name}",
        )
        done = []
        for i, clip in enumerate(win.clips):
            dest = out_dir / clip.name
            dest.mkdir(parents=True, exist_ok=True)
            made = ClipArtifacts(clip.index, clip.name, clip.start, clip.end)
            for consumer in consumers:
                value = consumer.collect(src, clip, _consumer_folder(folder, i, consumer), dest)
                setattr(made, consumer.name, value)
            done.append(made)
        return done


def _validate(clips: Sequence[ClipRange], frame_count: int) -> None:
    names = [c.name for c in clips]
    if len(set(names)) != len(names):
        raise InvalidInputError("clip names must be unique")
    for c in clips:
        if not 0 <= c.start < c.end <= frame_count:
            raise InvalidInputError(
                f"clip {c.name} [{c.start}, {c.end}) is not inside the video's {frame_count} frames"
            )
        if not c.name or "/" in c.name or c.name.startswith("."):
            raise InvalidInputError(f"bad clip name {c.name!r}")


def make_clip_artifacts(
    source: str | os.PathLike[str],
    clips: Sequence[ClipRange],
    out_dir: str | os.PathLike[str],
    *,
    keyframes: KeyframeConsumer | None = None,
    sprite: SpriteConsumer | None = None,
    proxy: ProxyConsumer | None = None,
    embedding: EmbedConsumer | None = None,
    workers: int | None = None,
    max_clips_per_window: int = MAX_CLIPS_PER_WINDOW,
    progress: ProgressFn | None = None,
) -> ArtifactsResult:
    """Keyframes, sprites, review proxies and/or embeddings of the keyframes' frames of
    ``clips`` (frame ranges of ``source``) from one decode.

    Each clip's files land in ``out_dir/<clip name>/``. A window whose decode fails is retried
    clip by clip, so a damaged stretch of the source fails only the clips it holds; those come
    back with ``error`` set rather than raising (the caller records them per clip).
    """
    started = time.monotonic()
    consumers: list[Consumer | WindowConsumer] = [
        c for c in (keyframes, sprite, proxy, embedding) if c is not None
    ]
    if not consumers:
        raise InvalidInputError(
            "nothing to make: ask for keyframes, a sprite, a proxy or an embedding"
        )
    path = existing_file(source)
    info = probe_video(path)
    _validate(clips, info.frame_count)
    src = Source(path, info, Fraction(info.fps_fraction))
    try:
        pk: Packets | None = read_packets(path, what=f"reading packets of {path.name}")
    except MediaError:
        pk = None
    if pk is not None and (pk.discard or len(pk.pts) != info.frame_count or info.is_vfr):
        pk = None  # frame n of a seek could not be trusted to be source frame first + n
    workers = workers or max(1, min(4, os.cpu_count() or 2))
    windows = plan_windows(
        clips,
        pk,
        workers,
        max_clips_per_window,
        cost=lambda c: sum(consumer.memory(src, c) for consumer in consumers),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ArtifactsResult(source=str(path), windows=len(windows))
    done_frames, total = 0, sum(c.frames for c in clips) or 1
    lock = threading.Lock()

    def decode(win: Window) -> list[ClipArtifacts]:
        with lock:
            result.processes += 1
        return _run_window(src, win, consumers, out)

    def one(win: Window) -> list[ClipArtifacts]:
        try:
            return decode(win)
        except MediaError:
            if len(win.clips) == 1:
                raise
        # Retry clip by clip: only the clips whose own frames fail to decode fail.
        made = []
        for clip in win.clips:
            single = plan_windows([clip], pk, 1, 1)[0]
            try:
                made += decode(single)
            except MediaError as exc:
                made.append(
                    ClipArtifacts(clip.index, clip.name, clip.start, clip.end, error=str(exc))
                )
        return made

    def guarded(win: Window) -> list[ClipArtifacts]:
        try:
            return one(win)
        except MediaError as exc:
            return [
                ClipArtifacts(c.index, c.name, c.start, c.end, error=str(exc)) for c in win.clips
            ]

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for made in pool.map(guarded, windows):
            result.clips += made
            done_frames += sum(c.end_frame - c.start_frame for c in made)
            if progress:
                progress(done_frames / total, f"clip {len(result.clips)}/{len(clips)}")
    result.clips.sort(key=lambda c: c.index)
    result.seconds = round(time.monotonic() - started, 3)
    return result
