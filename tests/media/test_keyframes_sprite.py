"""Key-frame JPEGs and sprite sheets of clips."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from heaters_media.errors import CorruptMediaError, InvalidInputError, UnsupportedMediaError
from heaters_media.keyframes import extract_keyframes
from heaters_media.sprite import JPEG_MAX_DIMENSION, make_sprite
from tests.media_factory import frame_signature, make_video


def _image_size(path: str | Path) -> tuple[int, int]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,codec_name",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    s = json.loads(out)["streams"][0]
    assert s["codec_name"] == "mjpeg"
    return s["width"], s["height"]


def _fps_filter_count(clip: Path, rate: str) -> int:
    """How many frames ffmpeg's fps filter really outputs (ground truth for tile counts)."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(clip),
            "-an",
            "-vf",
            f"fps={rate}",
            "-f",
            "framemd5",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))


def _diff(a: bytes, b: bytes) -> float:
    return float(
        np.abs(
            np.frombuffer(a, np.uint8).astype(np.int16)
            - np.frombuffer(b, np.uint8).astype(np.int16)
        ).mean()
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kfmedia")


@pytest.fixture(scope="module")
def clip100(media: Path) -> Path:
    """100 frames at 25 fps (testsrc2: every frame differs)."""
    return make_video(media / "clip100.mp4", [100], audio=False)


@pytest.fixture(scope="module")
def clip15fps(media: Path) -> Path:
    return make_video(media / "clip15.mp4", [45], fps=15, audio=False)


@pytest.fixture(scope="module")
def text_file(media: Path) -> Path:
    p = media / "notes.txt"
    p.write_text("not a video\n" * 20)
    return p


@pytest.fixture(scope="module")
def audio_only(media: Path) -> Path:
    p = media / "audio.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(p)],
        check=True,
    )
    return p


# ------------------------------------------------------------------------------------ keyframes


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("midpoint", [(50, 50)]),
        ("multi", [(25, 25), (50, 50), (75, 75)]),
    ],
)
def test_keyframes(clip100: Path, tmp_path: Path, strategy: str, expected) -> None:
    r = extract_keyframes(clip100, strategy=strategy, out_dir=tmp_path)
    assert r.strategy == strategy and r.frame_count == 100
    assert [(k.pct, k.frame_index) for k in r.keyframes] == expected
    for k in r.keyframes:
        p = Path(k.path)
        assert p.name == f"clip100_{strategy}_{k.pct}.jpg"
        assert p.read_bytes()[:2] == b"\xff\xd8"
        assert _image_size(p) == (320, 180)
        assert k.timestamp == pytest.approx(k.frame_index / 25)
        # The JPEG shows the named frame, not a neighbour.
        got = frame_signature(p, 0, (160, 90))
        diffs = {
            i: _diff(got, frame_signature(clip100, i, (160, 90)))
            for i in (k.frame_index - 1, k.frame_index, k.frame_index + 1)
        }
        assert min(diffs, key=diffs.__getitem__) == k.frame_index
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        Path(k.path).name for k in r.keyframes
    )
    assert json.loads(json.dumps(r.to_dict()))["status"] == "success"


def test_keyframes_of_a_tiny_clip(media: Path, tmp_path: Path) -> None:
    clip = make_video(media / "tiny.mp4", [2], audio=False)
    r = extract_keyframes(clip, "multi", tmp_path)
    assert [k.frame_index for k in r.keyframes] == [0, 1, 1]
    assert all(Path(k.path).stat().st_size > 0 for k in r.keyframes)


def test_keyframes_default_out_dir_is_beside_clip(clip100: Path) -> None:
    r = extract_keyframes(clip100)
    try:
        assert Path(r.keyframes[0].path).parent == clip100.parent
    finally:
        for k in r.keyframes:
            Path(k.path).unlink()


def test_keyframes_errors(clip100: Path, text_file: Path, audio_only: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError):
        extract_keyframes(clip100, "random", out)
    with pytest.raises(InvalidInputError):
        extract_keyframes(tmp_path / "missing.mp4", "midpoint", out)
    with pytest.raises((UnsupportedMediaError, CorruptMediaError)):
        extract_keyframes(text_file, "midpoint", out)
    with pytest.raises(UnsupportedMediaError):
        extract_keyframes(audio_only, "multi", out)
    assert not out.exists() or list(out.iterdir()) == []


# ------------------------------------------------------------------------------------- sprites


def _check_sheet(r, clip: Path) -> dict:
    assert (
        _image_size(r.path)
        == (r.width, r.height)
        == (r.cols * r.tile_width, r.rows * r.tile_height)
    )
    assert r.rows == -(-r.frame_count // r.cols)
    assert r.height <= JPEG_MAX_DIMENSION and r.tile_height % 2 == 0
    assert r.frame_count == _fps_filter_count(clip, r.sprite_fps_fraction)
    meta = json.loads(Path(r.json_path).read_text())
    assert Path(r.json_path) == Path(r.path).with_suffix(".json")
    for key in (
        "cols",
        "rows",
        "tile_width",
        "tile_height",
        "frame_count",
        "sprite_fps",
        "clip_fps",
        "duration",
        "width",
        "height",
    ):
        assert meta[key] == getattr(r, key), key
    assert meta["image"] == Path(r.path).name
    return meta


def test_sprite_default_caps_fps_at_24(clip100: Path, tmp_path: Path) -> None:
    r = make_sprite(clip100, tmp_path / "s.jpg")
    assert r.sprite_fps == 24.0 and r.clip_fps == 25.0
    assert (r.tile_width, r.tile_height, r.cols) == (480, 270, 5)
    assert r.frame_count == 96 and r.rows == 20
    _check_sheet(r, clip100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jpg", "s.json"]


def test_sprite_never_above_clip_fps(clip15fps: Path, tmp_path: Path) -> None:
    r = make_sprite(clip15fps, tmp_path / "s.jpg", tile_width=160, cols=4)
    assert r.sprite_fps == 15.0 and r.clip_fps == 15.0
    assert r.frame_count == 45 and (r.cols, r.rows) == (4, 12)
    _check_sheet(r, clip15fps)


def test_sprite_odd_rate(clip100: Path, tmp_path: Path) -> None:
    r = make_sprite(clip100, tmp_path / "s.jpg", tile_width=101, max_fps=7.3, cols=3)
    assert r.tile_width == 100 and r.tile_height == 56
    assert r.sprite_fps == pytest.approx(7.3)
    _check_sheet(r, clip100)


def test_sprite_jpeg_height_cap(clip100: Path, tmp_path: Path) -> None:
    # 1600 px wide tiles are 900 px high: at most 72 rows fit 65500 px, but 24 fps would need 96.
    r = make_sprite(clip100, tmp_path / "big.jpg", tile_width=1600, cols=1)
    assert r.tile_height == 900
    assert r.frame_count <= JPEG_MAX_DIMENSION // 900 and r.rows * 900 <= JPEG_MAX_DIMENSION
    assert r.sprite_fps < 24.0
    _check_sheet(r, clip100)


def test_sprite_height_cap_with_lower_limit(clip100: Path, tmp_path: Path) -> None:
    r = make_sprite(clip100, tmp_path / "s.jpg", tile_width=64, cols=2, max_height=360)
    assert r.tile_height == 36 and r.rows <= 10 and r.frame_count <= 20
    assert r.sprite_fps == pytest.approx(5.0)
    _check_sheet(r, clip100)


def test_sprite_errors(clip100: Path, text_file: Path, audio_only: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError):
        make_sprite(clip100, out / "s.png")
    with pytest.raises(InvalidInputError):
        make_sprite(clip100, out / "s.jpg", cols=0)
    with pytest.raises(InvalidInputError):
        make_sprite(clip100, out / "s.jpg", tile_width=20000, cols=5)
    with pytest.raises((UnsupportedMediaError, CorruptMediaError)):
        make_sprite(text_file, out / "s.jpg")
    with pytest.raises(UnsupportedMediaError):
        make_sprite(audio_only, out / "s.jpg")
    assert not out.exists() or list(out.iterdir()) == []
