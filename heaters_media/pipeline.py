"""The whole media path for one video, with no platform: ingest -> scenes -> clips -> artifacts.

This is what the README's first command runs before the Dagster platform exists around it, and
what a person runs to debug media handling alone (``python -m heaters_media pipeline SOURCE``).
Files land in one folder laid out like the object store (``source/``, ``clips/``).

``clips="exact"`` (the default) cuts every clip file at full quality now, frame-exact;
``clips="proxy"`` makes a small review proxy of each clip in the same decode as its keyframes
and sprite instead (:mod:`heaters_media.proxy`) and cuts no clip file: the pass that costs
five decodes of the file is left for the clips a reviewer keeps (``split`` with their scenes).
``embed=MODEL`` also embeds every clip from its keyframes' frames in that decode (no JPEG
round trip): ``embeddings.npy``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heaters_media.artifacts import (
    ClipArtifacts,
    ClipRange,
    KeyframeConsumer,
    SpriteConsumer,
    make_clip_artifacts,
)
from heaters_media.embed_frames import FrameEmbedder, combine
from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.frames_consumer import EmbedConsumer
from heaters_media.ingest import ingest
from heaters_media.progress import ProgressFn
from heaters_media.proxy import ProxyConsumer
from heaters_media.results import Result
from heaters_media.scene_list import clip_names
from heaters_media.scenes import detect_scenes
from heaters_media.split import DEFAULT_NAME_TEMPLATE, split_video
from heaters_media.tools import peak_rss_mb, processes_started

#: What the pipeline makes of each clip: ``exact`` clip files now, or ``proxy`` review proxies.
CLIP_MODES = ("exact", "proxy")


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
    clip_mode: str = "exact"
    timings: dict[str, float] = field(default_factory=dict)
    #: External processes (ffmpeg, ffprobe) started, per step and in all.
    processes: dict[str, int] = field(default_factory=dict)
    #: Peak resident memory in MiB: this Python process and its largest child process.
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    #: ``embed=MODEL``: model, strategy, dimension, the ``.npy`` file (row i = clip i) and the
    #: clips whose frames the model failed on.
    embedding: dict[str, Any] | None = None


def run_pipeline(
    source: str,
    out_dir: str | os.PathLike[str],
    *,
    detector: str = "adaptive",
    threshold: float | None = None,
    min_scene_len: float = 1.0,
    keyframe_strategy: str = "multi",
    clips: str = "exact",
    embed: str | None = None,
    embed_strategy: str = "keyframe_multi_avg",
    model_path: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> PipelineResult:
    """Run every media task on ``source``; each stage reports into ``progress`` in turn.

    ``embed``: a model name (``heaters/pixels-v1``, a CLIP or DINOv2 name, weights from the
    Hugging Face cache or ``model_path``) embeds each clip from its keyframes' frames in the
    same decode (:mod:`heaters_media.frames_consumer`), one vector per clip
    (``embed_strategy`` ``keyframe_multi_avg`` or ``keyframe_midpoint``), saved as
    ``embeddings.npy`` in ``out_dir``."""
    if clips not in CLIP_MODES:
        raise InvalidInputError(f"clips must be one of {', '.join(CLIP_MODES)}, got {clips!r}")
    if embed_strategy not in ("keyframe_multi_avg", "keyframe_midpoint"):
        raise InvalidInputError(
            "embed_strategy must be keyframe_multi_avg or keyframe_midpoint, "
            f"got {embed_strategy!r}"
        )
    keyframer = KeyframeConsumer(keyframe_strategy)
    # The model loads (and a bad name fails) before any media work.
    embedder = FrameEmbedder(embed, model_path=model_path, device=device) if embed else None
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

    cut: list[tuple[str, int, int, float, float, str]]
    if clips == "exact":
        scenes = [asdict(s) for s in detected.scenes]
        split = split_video(video, scenes, out / "clips", progress=stage("split", 0.45, 0.75))
        done("split")
        cut = [
            (Path(c.path).stem, c.start_frame, c.end_frame, c.start_time, c.end_time, c.method)
            for c in split.clips
        ]
    else:
        pairs = [(s.start_frame, s.end_frame) for s in detected.scenes]
        names = clip_names(DEFAULT_NAME_TEMPLATE, Path(video).stem, pairs)
        cut = [
            (Path(n).stem, s.start_frame, s.end_frame, s.start_time, s.end_time, "proxy")
            for n, s in zip(names, detected.scenes, strict=True)
        ]
    ranges = [ClipRange(k, c[1], c[2], c[0]) for k, c in enumerate(cut)]
    made = make_clip_artifacts(
        video,
        ranges,
        out / "clips",
        keyframes=keyframer,
        sprite=SpriteConsumer(),
        proxy=ProxyConsumer() if clips == "proxy" else None,
        embedding=EmbedConsumer(embedder, keyframe_strategy) if embedder else None,
        progress=stage("artifacts", 0.75 if clips == "exact" else 0.45, 1.0),
    )
    if made.failed:
        first = made.failed[0]
        raise CorruptMediaError(
            f"{len(made.failed)} clip(s) have no keyframes or sprite; first: {first.name}: "
            f"{first.error}"
        )
    listed: list[dict[str, Any]] = []
    for (name, start, end, t0, t1, method), art in zip(cut, made.clips, strict=True):
        assert art.keyframes is not None and art.sprite is not None
        listed.append(
            {
                "clip": f"{name}/proxy.mp4" if art.proxy is not None else f"{name}.mp4",
                "start_frame": start,
                "end_frame": end,
                "start_time": t0,
                "end_time": t1,
                "frames": end - start,
                "method": method,
                "keyframes": [Path(k.path).name for k in art.keyframes.keyframes],
                "sprite": f"{art.sprite.cols}x{art.sprite.rows} tiles @ "
                f"{art.sprite.sprite_fps:g} fps",
            }
        )
    done("artifacts")
    embedding = _save_vectors(made.clips, embedder, embed_strategy, out) if embedder else None

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
        clips=listed,
        clip_mode=clips,
        timings={k: round(v, 3) for k, v in timings.items()},
        processes={**processes, "total": sum(processes.values())},
        peak_rss_mb=peak_rss_mb(),
        embedding=embedding,
    )


def _save_vectors(
    made: list[ClipArtifacts], embedder: FrameEmbedder, strategy: str, out: Path
) -> dict[str, Any]:
    """Each clip's vector, row i of ``embeddings.npy`` for clip i (zeros where the model
    failed on a clip's frames: listed in ``failed``)."""
    rows = np.zeros((len(made), embedder.dimension), np.float32)
    failed: dict[str, str] = {}
    for i, art in enumerate(made):
        vectors = art.embedding
        if vectors is None or vectors.error is not None or not vectors.vectors:
            failed[art.name] = vectors.error if vectors and vectors.error else "no vectors"
            continue
        rows[i] = combine(vectors.array(), strategy)[0]
    np.save(out / "embeddings.npy", rows)
    return {
        "model": embedder.name,
        "family": embedder.family,
        "strategy": strategy,
        "dimension": embedder.dimension,
        "file": "embeddings.npy",
        "failed": failed,
    }
