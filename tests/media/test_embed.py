"""Image embeddings: the weights-free descriptor, and CLIP/DINOv2 through the real loading code.

No weights are downloaded: tiny randomly initialized CLIP and DINOv2 models (and their image
processors and a tiny CLIP tokenizer) are written with ``save_pretrained`` into a session tmp
folder and loaded back with ``from_pretrained`` exactly as real weights would be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from heaters_media import descriptor
from heaters_media.embed import STRATEGIES, embed_images, embed_text
from heaters_media.embed_models import ModelWeightsNotFoundError
from heaters_media.errors import CorruptMediaError, InvalidInputError
from tests.tiny_models import build_tiny_models

ROOT = Path(__file__).resolve().parents[2]
PIXELS = descriptor.NAME


def _scene(seed: int, size: tuple[int, int] = (320, 180)) -> np.ndarray:
    """A synthetic 'key frame': a gradient background in a random colour plus a few shapes."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = np.broadcast_to(a * (1 - ramp) + b * ramp, (h, w, 3)).astype(np.uint8).copy()
    for _ in range(4):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(img, (x, y), int(rng.integers(10, h // 2)), colour, -1)
        cv2.rectangle(img, (x // 2, y // 2), (x // 2 + 40, y // 2 + 25), colour[::-1], -1)
    return img


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for i in range(5):
        p = folder / f"frame_{i}.jpg"
        cv2.imwrite(str(p), _scene(i))
        paths.append(p)
    return paths


# --- weights-free descriptor ---------------------------------------------------------------


def test_descriptor_fixed_dimension_unit_norm_and_deterministic(images: list[Path]) -> None:
    a = embed_images(images, model=PIXELS, strategy="keyframe_multi", batch_size=2)
    b = embed_images(images, model=PIXELS, strategy="keyframe_multi")
    assert a.dimension == descriptor.DIMENSION == 96
    assert a.family == "descriptor" and "not CLIP" in a.notes[0]
    vec = a.array()
    assert vec.shape == (len(images), 96)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vec, b.array())
    assert a.images_per_second > 0 and a.device == "cpu"


def test_descriptor_rescaled_reencoded_copy_is_nearest(images: list[Path], tmp_path: Path) -> None:
    original = cv2.imread(str(images[0]))
    copy = tmp_path / "copy.jpg"
    small = cv2.resize(original, (288, 162), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(copy), small, [cv2.IMWRITE_JPEG_QUALITY, 70])
    vec = embed_images([copy, *images], model=PIXELS, strategy="keyframe_multi").array()
    sims = vec[1:] @ vec[0]
    assert int(np.argmax(sims)) == 0, sims
    assert sims[0] > 0.98 and sims[0] > sims[1:].max() + 0.1, sims


def test_descriptor_strategies(images: list[Path]) -> None:
    mid = embed_images(images[:1], model=PIXELS)
    multi = embed_images(images[:3], model=PIXELS, strategy="keyframe_multi").array()
    avg = embed_images(images[:3], model=PIXELS, strategy="keyframe_multi_avg").array()
    assert mid.strategy == "keyframe_midpoint" and len(mid.vectors) == 1
    np.testing.assert_allclose(mid.array()[0], multi[0], atol=1e-6)
    mean = multi.mean(axis=0)
    np.testing.assert_allclose(avg[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert avg.shape == (1, 96)


def test_descriptor_flat_grey_image_still_unit(tmp_path: Path) -> None:
    p = tmp_path / "grey.png"
    cv2.imwrite(str(p), np.full((64, 64, 3), 128, np.uint8))
    vec = embed_images([p], model=PIXELS).array()[0]
    assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-6


def test_descriptor_result_is_json(images: list[Path]) -> None:
    data = json.loads(json.dumps(embed_images(images[:2], model=PIXELS).to_dict()))
    assert data["status"] == "success" and data["model"] == PIXELS
    assert len(data["vectors"]) == 2 and all(isinstance(x, float) for x in data["vectors"][0])


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [b"", b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10, b"hello, I am text\n"]
)
def test_undecodable_image_is_corrupt_media_naming_the_file(
    tmp_path: Path, images: list[Path], payload: bytes
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(payload)
    with pytest.raises(CorruptMediaError, match=r"broken\.jpg"):
        embed_images([images[0], bad], model=PIXELS, strategy="keyframe_multi")


def test_invalid_inputs(tmp_path: Path, images: list[Path]) -> None:
    with pytest.raises(InvalidInputError, match="unknown embedding model"):
        embed_images(images, model="acme/not-a-model")
    with pytest.raises(InvalidInputError, match="unknown strategy"):
        embed_images(images, model=PIXELS, strategy="keyframe_everything")
    with pytest.raises(InvalidInputError, match="file not found"):
        embed_images([tmp_path / "missing.jpg"], model=PIXELS)
    with pytest.raises(InvalidInputError, match="unknown device"):
        embed_images(images, model=PIXELS, device="tpu")
    with pytest.raises(InvalidInputError, match="batch_size"):
        embed_images(images, model=PIXELS, batch_size=0)
    with pytest.raises(InvalidInputError, match="no images"):
        embed_images([], model=PIXELS)
    with pytest.raises(InvalidInputError, match=r"no config\.json"):
        embed_images(images, model="mine", model_path=tmp_path)
    with pytest.raises(InvalidInputError, match="no weights"):
        embed_images(images, model=PIXELS, model_path=tmp_path)
    with pytest.raises(InvalidInputError, match="CLIP"):
        embed_text(["a dog"], model=PIXELS)
    assert set(STRATEGIES) == {"keyframe_midpoint", "keyframe_multi", "keyframe_multi_avg"}


_NO_ML = (
    "import sys\n"
    "for m in ('torch', 'transformers', 'PIL'):\n"
    "    sys.modules[m] = None  # make them unimportable\n"
    "from heaters_media.embed import embed_images\n"
    "from heaters_media.errors import ToolFailedError\n"
    "r = embed_images([sys.argv[1]], model='heaters/pixels-v1')\n"
    "assert r.dimension == 96, r\n"
    "try:\n"
    "    embed_images([sys.argv[1]], model='openai/clip-vit-base-patch32', offline=True)\n"
    "except ToolFailedError as e:\n"
    "    print(e.message)\n"
)


def test_descriptor_works_without_torch_and_clip_says_how_to_install(images: list[Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _NO_ML, str(images[0])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install -e '.[ml]'" in proc.stdout


def test_cli_embed_descriptor_prints_json(images: list[Path]) -> None:
    cmd = [sys.executable, "-m", "heaters_media", "embed", *map(str, images[:3])]
    proc = subprocess.run(
        [*cmd, "--model", PIXELS, "--strategy", "keyframe_multi_avg", "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "success" and data["dimension"] == 96
    assert data["strategy"] == "keyframe_multi_avg" and len(data["vectors"]) == 1

    bad = subprocess.run(
        [*cmd, "--model", "nope/nope"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error"]["type"] == "invalid_input"


# --- CLIP and DINOv2 through transformers (tiny random models, real loading code) ------------


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch", reason="torch not installed (pip install -e '.[ml]')")
    pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize(("family", "dimension"), [("clip", 16), ("dinov2", 32)])
def test_transformer_models_vectors(
    tiny_models: dict[str, Path], images: list[Path], family: str, dimension: int
) -> None:
    kw = dict(model=f"tiny-{family}", model_path=tiny_models[family], device="cpu", offline=True)
    one = embed_images(images, strategy="keyframe_multi", batch_size=1, **kw)
    batched = embed_images(images, strategy="keyframe_multi", batch_size=4, **kw)
    again = embed_images(images, strategy="keyframe_multi", batch_size=4, **kw)
    avg = embed_images(images, strategy="keyframe_multi_avg", batch_size=3, **kw)

    assert one.family == family and one.dimension == dimension
    assert one.device == "cpu" and one.dtype == "float32" and one.model == f"tiny-{family}"
    vec = one.array()
    assert vec.shape == (len(images), dimension)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched.array(), vec, atol=1e-5)
    assert np.array_equal(batched.array(), again.array())
    assert not np.allclose(vec[0], vec[1])  # different images, different vectors
    mean = vec.mean(axis=0)
    np.testing.assert_allclose(avg.array()[0], mean / np.linalg.norm(mean), atol=1e-5)
    json.dumps(avg.to_dict())


def test_model_is_loaded_once_and_name_can_be_a_folder(
    tiny_models: dict[str, Path], images: list[Path]
) -> None:
    from heaters_media import embed_models

    spec = embed_models.resolve_model(str(tiny_models["clip"]))
    assert spec.family == "clip" and spec.local_dir
    first = embed_models.load_model(spec, "cpu", "float32", True)
    misses = embed_models.model_cache_info().misses
    r = embed_images(images[:2], model=str(tiny_models["clip"]), device="cpu", offline=True)
    assert r.dimension == 16
    assert embed_models.model_cache_info().misses == misses  # served from the cache, not loaded
    renamed = embed_models.resolve_model("another-label", tiny_models["clip"])
    assert embed_models.load_model(renamed, "cpu", "float32", True) is first
    assert embed_models.model_cache_info().misses == misses


def test_clip_text_embeddings(tiny_models: dict[str, Path]) -> None:
    kw = dict(model="tiny-clip", model_path=tiny_models["clip"], device="cpu", offline=True)
    r = embed_text(["a dog", "a red car on a road", "a dog"], **kw)
    vec = r.array()
    assert r.dimension == 16 and vec.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vec[0], vec[2], atol=1e-5)
    assert not np.allclose(vec[0], vec[1])
    with pytest.raises(InvalidInputError, match="CLIP"):
        embed_text(["a dog"], model="tiny", model_path=tiny_models["dinov2"], offline=True)


def test_missing_weights_offline_is_a_clear_error(
    tiny_models: dict[str, Path], images: list[Path], tmp_path: Path
) -> None:
    # A folder with a config but no weights files.
    (tmp_path / "config.json").write_text((tiny_models["clip"] / "config.json").read_text())
    with pytest.raises(ModelWeightsNotFoundError, match="save_pretrained"):
        embed_images(images[:1], model="half", model_path=tmp_path, device="cpu", offline=True)

    # A known hub id that is not in the Hugging Face cache: fail fast, say how to fetch it.
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("facebook/dinov2-small", "config.json"), str):
        pytest.skip("facebook/dinov2-small is in this machine's HF cache")
    with pytest.raises(ModelWeightsNotFoundError, match="hf download facebook/dinov2-small"):
        embed_images(images[:1], model="facebook/dinov2-small", device="cpu", offline=True)


def test_offline_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from heaters_media.embed_models import env_offline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not env_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert env_offline()


def test_cli_embed_with_model_path(tiny_models: dict[str, Path], images: list[Path]) -> None:
    from typer.testing import CliRunner

    from heaters_media.cli import app

    args = ["embed", *map(str, images[:2]), "--model", "tiny-dinov2", "--strategy"]
    args += ["keyframe_multi", "--model-path", str(tiny_models["dinov2"]), "--offline"]
    out = CliRunner().invoke(app, [*args, "--device", "cpu", "--batch-size", "1"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["dimension"] == 32 and len(data["vectors"]) == 2 and data["batch_size"] == 1
