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

from heaters_media.ingest import ingest
from heaters_media.keyframes import extract_keyframes
from heaters_media.progress import ProgressFn
from heaters_media.results import Result
from heaters_media.scenes import detect_scenes
from heaters_media.split import split_video
from heaters_media.sprite import make_sprite


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

    def stage(name: str, lo: float, hi: float) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda f, msg: progress(lo + (hi - lo) * f, f"{name}: {msg}")

    t = time.perf_counter()
    ingested = ingest(source, out / "source", progress=stage("ingest", 0.0, 0.2))
    timings["ingest"] = time.perf_counter() - t
    video = ingested.normalized_path

    t = time.perf_counter()
    detected = detect_scenes(
        video,
        detector=detector,
        threshold=threshold,
        min_scene_len=min_scene_len,
        progress=stage("scenes", 0.2, 0.45),
    )
    timings["detect_scenes"] = time.perf_counter() - t

    t = time.perf_counter()
    scenes = [asdict(s) for s in detected.scenes]
    split = split_video(video, scenes, out / "clips", progress=stage("split", 0.45, 0.75))
    timings["split"] = time.perf_counter() - t

    t = time.perf_counter()
    clips: list[dict[str, Any]] = []
    for i, clip in enumerate(split.clips):
        clip_path = Path(clip.path)
        art_dir = clip_path.with_suffix("")
        frames = extract_keyframes(clip_path, strategy=keyframe_strategy, out_dir=art_dir)
        sprite = make_sprite(clip_path, art_dir / "sprite.jpg")
        clips.append(
            {
                "clip": clip_path.name,
                "start_frame": clip.start_frame,
                "end_frame": clip.end_frame,
                "start_time": clip.start_time,
                "end_time": clip.end_time,
                "frames": clip.frame_count,
                "method": clip.method,
                "keyframes": [Path(k.path).name for k in frames.keyframes],
                "sprite": f"{sprite.cols}x{sprite.rows} tiles @ {sprite.sprite_fps:g} fps",
            }
        )
        if progress:
            progress(0.75 + 0.25 * (i + 1) / len(split.clips), f"artifacts: clip {i + 1}")
    timings["artifacts"] = time.perf_counter() - t

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
    )
