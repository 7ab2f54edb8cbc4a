"""The whole media path for one video, with no platform: ingest -> scenes -> clips -> artifacts.

This is what the README's first command runs before the Dagster platform exists around it, and
what a person runs to debug media handling alone (``python -m heaters_media pipeline SOURCE``).
Files land in one folder laid out like the object store (``source/``, ``clips/``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heaters_media.artifacts import (
    ClipRange,
    KeyframeConsumer,
    SpriteConsumer,
    make_clip_artifacts,
)
from heaters_media.errors import CorruptMediaError
from heaters_media.ingest import ingest
from heaters_media.progress import ProgressFn
from heaters_media.results import Result
from heaters_media.scenes import detect_scenes
from heaters_media.split import split_video
from heaters_media.tools import peak_rss_mb, processes_started


@dataclass
class PipelineResult(Result):
    source: str
    out_dir: str
    video: str
    title: str | None
    duration: float
    frames: int
    fps: float
    scenes: int
    clips: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    #: External processes (ffmpeg, ffprobe) started, per step and in all.
    processes: dict[str, int] = field(default_factory=dict)
    #: Peak resident memory in MiB: this Python process and its largest child process.
    peak_rss_mb: dict[str, float] = field(default_factory=dict)


def run_pipeline(
    source: str,
    out_dir: str | os.PathLike[str],
    *,
    detector: str = "adaptive",
    threshold: float | None = None,
    min_scene_len: float = 1.0,
    keyframe_strategy: str = "multi",
    progress: ProgressFn | None = None,
) -> PipelineResult:
    """Run every media task on ``source``; each stage reports into ``progress`` in turn."""
    out = Path(out_dir)
    timings: dict[str, float] = {}
    processes: dict[str, int] = {}
    clock, count = [time.perf_counter()], [processes_started()]

    def done(step: str) -> None:
        """Close ``step``: its seconds and the processes it started; the next step starts now."""
        timings[step] = time.perf_counter() - clock[0]
        processes[step] = processes_started() - count[0]
        clock[0], count[0] = time.perf_counter(), processes_started()

    def stage(name: str, lo: float, hi: float) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda f, msg: progress(lo + (hi - lo) * f, f"{name}: {msg}")

    ingested = ingest(source, out / "source", progress=stage("ingest", 0.0, 0.2))
    done("ingest")
    video = ingested.normalized_path

    detected = detect_scenes(
        video,
        detector=detector,
        threshold=threshold,
        min_scene_len=min_scene_len,
        progress=stage("scenes", 0.2, 0.45),
    )
    done("detect_scenes")

    scenes = [asdict(s) for s in detected.scenes]
    split = split_video(video, scenes, out / "clips", progress=stage("split", 0.45, 0.75))
    done("split")

    ranges = [
        ClipRange(c.index, c.start_frame, c.end_frame, Path(c.path).stem) for c in split.clips
    ]
    made = make_clip_artifacts(
        video,
        ranges,
        out / "clips",
        keyframes=KeyframeConsumer(keyframe_strategy),
        sprite=SpriteConsumer(),
        progress=stage("artifacts", 0.75, 1.0),
    )
    if made.failed:
        first = made.failed[0]
        raise CorruptMediaError(
            f"{len(made.failed)} clip(s) have no keyframes or sprite; first: {first.name}: "
            f"{first.error}"
        )
    clips: list[dict[str, Any]] = []
    for clip, art in zip(split.clips, made.clips, strict=True):
        assert art.keyframes is not None and art.sprite is not None
        clips.append(
            {
                "clip": Path(clip.path).name,
                "start_frame": clip.start_frame,
                "end_frame": clip.end_frame,
                "start_time": clip.start_time,
                "end_time": clip.end_time,
                "frames": clip.frame_count,
                "method": clip.method,
                "keyframes": [Path(k.path).name for k in art.keyframes.keyframes],
                "sprite": f"{art.sprite.cols}x{art.sprite.rows} tiles @ "
                f"{art.sprite.sprite_fps:g} fps",
            }
        )
    done("artifacts")

    probe_info = ingested.probe
    return PipelineResult(
        source=source,
        out_dir=str(out),
        video=str(video),
        title=ingested.title,
        duration=float(probe_info["duration"]),
        frames=detected.metadata["frames_analysed"],
        fps=float(probe_info["fps"]),
        scenes=len(detected.scenes),
        clips=clips,
        timings={k: round(v, 3) for k, v in timings.items()},
        processes={**processes, "total": sum(processes.values())},
        peak_rss_mb=peak_rss_mb(),
    )
