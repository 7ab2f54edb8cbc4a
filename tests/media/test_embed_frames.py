"""Embeddings straight from the media engine's decode (``EmbedConsumer`` + ``FrameEmbedder``).

The reference is the path every stored vector took so far: the pass's keyframe JPEGs read back
through ``embed_images``. The frames path skips the JPEG; the vectors must agree within the
feed's tolerance (cosine >= 0.999) for the descriptor, the tiny CLIP/DINOv2 models (32 px
inputs) and tiny models behind the real processors' settings (224 px inputs, frames scaled
down in ffmpeg first), on a 720p edit, an anamorphic source (pixels not square) and a rotated
one (stored landscape, shown portrait). Also:
the same frames as the keyframes, a model failure that spares the clip's other artifacts, and
``pipeline --embed`` through the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heaters_media.artifacts import make_clip_artifacts
from heaters_media.consumers import ClipRange, KeyframeConsumer, SpriteConsumer
from heaters_media.embed import embed_images
from heaters_media.embed_frames import FrameEmbedder, combine
from heaters_media.frames_consumer import EmbedConsumer, frame_size
from heaters_media.tools import ffmpeg_cmd
from tests.tiny_models import build_real_size_models, build_tiny_models

ROOT = Path(__file__).resolve().parents[2]
BBB = ROOT / "tests" / "data" / "bbb_720p_5s.mp4"  # (c) Blender Foundation, CC BY 3.0
COSINE = 0.999
CLIPS = [ClipRange(0, 0, 37, "a"), ClipRange(1, 37, 90, "b"), ClipRange(2, 90, 132, "c")]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch", reason="torch not installed (pip install -e '.[ml]')")
    root = tmp_path_factory.mktemp("frame-models")
    return {**build_tiny_models(root), **build_real_size_models(root)}


@pytest.fixture(scope="module")
def anamorphic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """480x360 stored, shown 640x360 (sample aspect 4:3): frames must be made square."""
    path = tmp_path_factory.mktemp("anamorphic") / "sar.mp4"
    graph = "testsrc2=size=480x360:rate=25:duration=4,setsar=4/3,format=yuv420p"
    cmd = ffmpeg_cmd("-f", "lavfi", "-i", graph, "-c:v", "libx264", "-g", "40", str(path))
    subprocess.run(cmd, check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320x180 stored, shown 180x320 (a phone's rotation metadata): frames must be upright."""
    folder = tmp_path_factory.mktemp("rotated")
    graph = "testsrc2=size=320x180:rate=25:duration=4,format=yuv420p"
    plain, path = folder / "plain.mp4", folder / "rotated.mp4"
    cmd = ffmpeg_cmd("-f", "lavfi", "-i", graph, "-c:v", "libx264", "-g", "40", str(plain))
    subprocess.run(cmd, check=True, capture_output=True)
    rotate = ffmpeg_cmd("-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(path))
    subprocess.run(rotate, check=True, capture_output=True)
    return path


def _embedder(name: str, models: dict[str, Path]) -> FrameEmbedder:
    if name == "descriptor":
        return FrameEmbedder("heaters/pixels-v1")
    return FrameEmbedder(f"tiny-{name}", model_path=models[name], device="cpu", offline=True)


def _reference(files: list[str], name: str, models: dict[str, Path]) -> np.ndarray:
    if name == "descriptor":
        return embed_images(files, model="heaters/pixels-v1", strategy="keyframe_multi").array()
    kw: dict[str, Any] = dict(model_path=models[name], device="cpu", offline=True)
    return embed_images(files, model=f"tiny-{name}", strategy="keyframe_multi", **kw).array()


@pytest.mark.parametrize("source", ["bbb", "anamorphic", "rotated"])
@pytest.mark.parametrize("name", ["descriptor", "clip", "dinov2", "clip-224", "dinov2-224"])
def test_frames_embed_as_the_keyframe_jpegs_do(
    models: dict[str, Path],
    anamorphic: Path,
    rotated: Path,
    tmp_path: Path,
    name: str,
    source: str,
) -> None:
    video = {"bbb": BBB, "anamorphic": anamorphic, "rotated": rotated}[source]
    clips = CLIPS if source == "bbb" else [ClipRange(0, 0, 50, "a"), ClipRange(1, 50, 100, "b")]
    embedder = _embedder(name, models)
    made = make_clip_artifacts(
        video,
        clips,
        tmp_path,
        keyframes=KeyframeConsumer("multi"),
        embedding=EmbedConsumer(embedder, "multi"),
    )
    display = {"bbb": (1280, 720), "anamorphic": (640, 360), "rotated": (180, 320)}[source]
    for art in made.clips:
        assert art.error is None and art.keyframes is not None and art.embedding is not None
        vectors = art.embedding
        assert vectors.error is None and vectors.model == embedder.name
        # The same frames as the keyframes, embedded at the size the model needs.
        assert vectors.frame_indices == [k.frame_index for k in art.keyframes.keyframes]
        assert vectors.pcts == [25, 50, 75]
        assert (vectors.width, vectors.height) == frame_size(*display, embedder.frame_short_side())
        got = vectors.array()
        assert got.shape == (3, embedder.dimension)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
        ref = _reference([k.path for k in art.keyframes.keyframes], name, models)
        cosine = (got * ref).sum(axis=1)
        assert cosine.min() >= COSINE, (name, source, art.name, cosine)


def test_frame_size_keeps_the_aspect_and_never_enlarges() -> None:
    assert frame_size(1280, 720, 448) == (796, 448)
    assert frame_size(720, 1280, 512) == (512, 910)
    assert frame_size(640, 360, 448) == (640, 360)
    assert frame_size(640, 360, 0) == (640, 360)


def test_combine_matches_the_stored_strategies() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(3, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    avg = combine(rows, "keyframe_multi_avg")
    assert avg.shape == (1, 8) and np.isclose(np.linalg.norm(avg), 1.0)
    assert np.allclose(avg[0], rows.mean(0) / np.linalg.norm(rows.mean(0)))
    assert np.array_equal(combine(rows, "keyframe_midpoint")[0], rows[1])
    assert np.array_equal(combine(rows[:1], "keyframe_midpoint")[0], rows[0])
    assert combine(rows, "keyframe_multi").shape == (3, 8)


class _Broken(FrameEmbedder):
    """The descriptor with a forward pass that fails (a model's runtime error)."""

    def __call__(self, frames: Any, full_size: tuple[int, int] | None = None) -> np.ndarray:
        raise RuntimeError("CUDA out of memory (simulated)")


def test_a_model_failure_spares_the_other_artifacts(tmp_path: Path) -> None:
    made = make_clip_artifacts(
        BBB,
        CLIPS,
        tmp_path,
        keyframes=KeyframeConsumer("multi"),
        sprite=SpriteConsumer(),
        embedding=EmbedConsumer(_Broken("heaters/pixels-v1"), "multi"),
    )
    assert not made.failed
    for art in made.clips:
        assert art.keyframes is not None and art.sprite is not None
        assert art.embedding is not None and art.embedding.vectors == []
        assert art.embedding.error == "RuntimeError: CUDA out of memory (simulated)"


def _pipeline(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "heaters_media", "pipeline", str(BBB), "--out", str(out)]
    return subprocess.run(
        [*cmd, "--clips", "proxy", "--quiet", *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_pipeline_embed_writes_one_vector_per_clip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _pipeline(out, "--embed", "heaters/pixels-v1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    emb = result["embedding"]
    assert emb["model"] == "heaters/pixels-v1" and emb["strategy"] == "keyframe_multi_avg"
    assert emb["failed"] == {}
    rows = np.load(out / emb["file"])
    assert rows.shape == (len(result["clips"]), emb["dimension"])
    for row, clip in zip(rows, result["clips"], strict=True):
        folder = out / "clips" / Path(clip["clip"]).parts[0]
        files = [str(folder / name) for name in clip["keyframes"]]
        ref = embed_images(files, model="heaters/pixels-v1", strategy="keyframe_multi_avg")
        assert float(row @ ref.array()[0]) >= COSINE


def test_pipeline_refuses_an_unknown_model_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _pipeline(out, "--embed", "nobody/no-such-model")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "no-such-model" in proc.stderr + proc.stdout
    assert not out.exists()
