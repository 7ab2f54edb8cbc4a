"""Frame-accurate splitting, merging and split-at, on generated videos with known cuts."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from heaters_media.errors import (
    CorruptMediaError,
    InvalidInputError,
    MediaError,
    ToolFailedError,
    UnsupportedMediaError,
)
from heaters_media.merge import merge_clips
from heaters_media.probe import keyframe_indices, probe
from heaters_media.split import split_clip_at, split_video
from tests.media_factory import count_frames, frame_signature, make_video, stream_info

ROOT = Path(__file__).resolve().parents[2]
BBB = ROOT / "tests" / "data" / "bbb_720p_5s.mp4"
SIG = (160, 90)


def _diff(a: bytes, b: bytes) -> float:
    return float(
        np.abs(
            np.frombuffer(a, np.uint8).astype(np.int16)
            - np.frombuffer(b, np.uint8).astype(np.int16)
        ).mean()
    )


def assert_same_frame(
    clip: Path, clip_index: int, source: Path, source_index: int, source_frames: int
) -> None:
    """Frame ``clip_index`` of ``clip`` is source frame ``source_index``, not a neighbour."""
    got = frame_signature(clip, clip_index, SIG)
    want = frame_signature(source, source_index, SIG)
    d_same = _diff(got, want)
    assert d_same < 3.0, f"clip frame {clip_index} differs from source frame {source_index}"
    for nb in (source_index - 1, source_index + 1):
        if not 0 <= nb < source_frames:
            continue
        other = frame_signature(source, nb, SIG)
        if _diff(want, other) < 1.0:  # neighbour indistinguishable (static content)
            continue
        assert d_same < _diff(got, other), (
            f"clip frame {clip_index} looks more like source frame {nb} than {source_index}"
        )


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def gop_video(media: Path) -> Path:
    """125 frames, key frames every 25 frames (0, 25, 50, 75, 100); scenes of 50/50/25."""
    return make_video(media / "gop.mp4", [50, 50, 25], gop=25)


@pytest.fixture(scope="module")
def copy_split(gop_video: Path, tmp_path_factory: pytest.TempPathFactory):
    return split_video(gop_video, [(0, 50), (50, 100), (100, 125)], tmp_path_factory.mktemp("copy"))


@pytest.fixture(scope="module")
def encode_split(gop_video: Path, tmp_path_factory: pytest.TempPathFactory):
    # 30 and 80 are not key frames: every clip needs re-encoding; 75..80 is a gap.
    return split_video(gop_video, [(0, 30), (30, 75), (80, 125)], tmp_path_factory.mktemp("encode"))


def test_fixture_has_expected_key_frames(gop_video: Path) -> None:
    assert keyframe_indices(gop_video) == [0, 25, 50, 75, 100]
    assert count_frames(gop_video) == 125


def test_copy_path_on_key_frames(copy_split, gop_video: Path) -> None:
    r = copy_split
    assert [c.method for c in r.clips] == ["copy"] * 3
    assert (r.copied, r.encoded) == (3, 0)
    for c in r.clips:
        assert count_frames(c.path) == c.frame_count == c.end_frame - c.start_frame
        # Stream copy is bit-exact: the decoded first/last frames equal the source's exactly.
        assert frame_signature(c.path, 0) == frame_signature(gop_video, c.start_frame)
        assert frame_signature(c.path, c.frame_count - 1) == frame_signature(
            gop_video, c.end_frame - 1
        )


def test_encode_path_is_frame_exact(encode_split, gop_video: Path) -> None:
    r = encode_split
    assert [c.method for c in r.clips] == ["encode"] * 3
    assert [(c.start_frame, c.end_frame) for c in r.clips] == [(0, 30), (30, 75), (80, 125)]
    for c in r.clips:
        assert count_frames(c.path) == c.end_frame - c.start_frame == c.frame_count
        assert_same_frame(Path(c.path), 0, gop_video, c.start_frame, 125)
        assert_same_frame(Path(c.path), c.frame_count - 1, gop_video, c.end_frame - 1, 125)


def test_mixed_copy_and_encode_cover_video(gop_video: Path, tmp_path: Path) -> None:
    scenes = [
        {"start_frame": 0, "end_frame": 25},
        {"start_frame": 25, "end_frame": 61},
        {"start_frame": 61, "end_frame": 100},
        {"start_frame": 100, "end_frame": 125},
    ]
    r = split_video(gop_video, scenes, tmp_path / "out", workers=2)
    assert [c.method for c in r.clips] == ["copy", "encode", "encode", "copy"]
    # Coverage: contiguous, no gap or overlap, every frame exactly once.
    assert r.clips[0].start_frame == 0 and r.clips[-1].end_frame == 125
    for prev, nxt in itertools.pairwise(r.clips):
        assert prev.end_frame == nxt.start_frame
    assert sum(count_frames(c.path) for c in r.clips) == 125
    assert_same_frame(Path(r.clips[2].path), 0, gop_video, 61, 125)
    assert r.clips[1].start_time == 1.0 and r.clips[1].end_time == 61 / 25
    assert _files(tmp_path / "out") == sorted(Path(c.path).name for c in r.clips)


def test_outputs_are_browser_playable(copy_split, encode_split) -> None:
    for c in copy_split.clips + encode_split.clips:
        info = stream_info(c.path)
        assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
        p = probe(c.path)
        assert p.faststart, c.path
        assert p.has_audio and p.audio_codec == "aac"
        assert Path(c.path).stat().st_size == c.size
        assert abs(p.duration - c.frame_count / 25) < 0.05


def test_result_is_json_and_progress_reported(gop_video: Path, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    r = split_video(
        gop_video,
        [(0, 25), (30, 40)],
        tmp_path,
        progress=lambda f, m: calls.append((f, m)),
        name_template="clip{index:03d}_{start}.mp4",
    )
    data = json.loads(json.dumps(r.to_dict()))
    assert data["status"] == "success" and len(data["clips"]) == 2
    assert [Path(c["path"]).name for c in data["clips"]] == ["clip000_0.mp4", "clip001_30.mp4"]
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_video_without_audio(media: Path, tmp_path: Path) -> None:
    src = make_video(media / "silent.mp4", [20, 20], audio=False)
    r = split_video(src, [(0, 20), (20, 40)], tmp_path)
    for c in r.clips:
        assert count_frames(c.path) == 20
        assert not probe(c.path).has_audio


@pytest.mark.parametrize(
    "scenes",
    [
        [],
        [(0, 126)],
        [(-1, 10)],
        [(10, 10)],
        [(20, 10)],
        [(0, 50), (40, 60)],
        [(50, 60), (0, 10)],
        [("a", 5)],
        [(0.5, 5)],
        [{"start_frame": 0}],
        "0-10",
    ],
    ids=[
        "empty",
        "beyond-end",
        "negative",
        "empty-scene",
        "reversed",
        "overlap",
        "unsorted",
        "not-int",
        "fractional",
        "missing-key",
        "not-a-list",
    ],
)
def test_invalid_scenes(gop_video: Path, tmp_path: Path, scenes) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError):
        split_video(gop_video, scenes, out)
    assert _files(out) == []


def _bad_inputs(folder: Path) -> dict[str, tuple[Path, type[MediaError] | tuple]]:
    folder.mkdir(exist_ok=True)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    rand = folder / "random.mp4"
    rand.write_bytes(np.random.default_rng(1).integers(0, 256, 30000, dtype=np.uint8).tobytes())
    text = folder / "notes.txt"
    text.write_text("this is not a video\n" * 50)
    audio = folder / "audio.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(audio)],
        check=True,
    )
    src = make_video(folder / "src.mp4", [40], audio=True)
    moov_last = folder / "moov_last.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-c",
            "copy",
            "-movflags",
            "0",
            str(moov_last),
        ],
        check=True,
    )
    data = moov_last.read_bytes()
    trunc = folder / "truncated.mp4"
    trunc.write_bytes(data[: len(data) // 2])
    data = src.read_bytes()
    trunc_fs = folder / "truncated_faststart.mp4"
    trunc_fs.write_bytes(data[: len(data) // 2])
    either = (CorruptMediaError, UnsupportedMediaError)
    return {
        "missing": (folder / "missing.mp4", InvalidInputError),
        "directory": (folder, InvalidInputError),
        "empty": (empty, CorruptMediaError),
        "random": (rand, CorruptMediaError),
        "text": (text, either),
        "audio-only": (audio, UnsupportedMediaError),
        "truncated": (trunc, CorruptMediaError),
        "truncated-faststart": (trunc_fs, CorruptMediaError),
    }


@pytest.fixture(scope="module")
def bad_inputs(media: Path):
    return _bad_inputs(media / "bad")


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "directory",
        "empty",
        "random",
        "text",
        "audio-only",
        "truncated",
        "truncated-faststart",
    ],
)
def test_bad_inputs_raise_typed_errors(
    bad_inputs, kind: str, tmp_path: Path, gop_video: Path
) -> None:
    path, err = bad_inputs[kind]
    out = tmp_path / "out"
    with pytest.raises(err):
        split_video(path, [(0, 10)], out)
    assert _files(out) == []
    with pytest.raises(err):
        split_clip_at(path, 5, out)
    assert _files(out) == []
    with pytest.raises(err):
        merge_clips(gop_video, path, out / "merged.mp4")
    with pytest.raises(err):
        merge_clips(path, gop_video, out / "merged.mp4")
    assert _files(out) == []


def test_merge_by_stream_copy(copy_split, gop_video: Path, tmp_path: Path) -> None:
    a, b = copy_split.clips[0].path, copy_split.clips[1].path
    r = merge_clips(a, b, tmp_path / "merged.mp4")
    assert r.method == "copy"
    assert r.frame_count == count_frames(r.path) == 100
    assert (r.a_frames, r.b_frames) == (50, 50)
    assert frame_signature(r.path, 50) == frame_signature(gop_video, 50)
    assert frame_signature(r.path, 99) == frame_signature(gop_video, 99)
    assert probe(r.path).faststart
    assert _files(tmp_path) == ["merged.mp4"]


def test_merge_by_encoding(copy_split, encode_split, gop_video: Path, tmp_path: Path) -> None:
    a, b = encode_split.clips[1], copy_split.clips[2]  # [30, 75) encoded + [100, 125) copied
    r = merge_clips(a.path, b.path, tmp_path / "merged.mp4")
    assert r.method == "encode"
    assert r.frame_count == count_frames(r.path) == 45 + 25
    assert_same_frame(Path(r.path), 45, gop_video, 100, 125)
    info = stream_info(r.path)
    assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
    p = probe(r.path)
    assert p.faststart and p.has_audio and abs(p.duration - 70 / 25) < 0.05


def test_merge_different_sizes_and_missing_audio(media: Path, tmp_path: Path) -> None:
    a = make_video(media / "small.mp4", [12], size=(160, 90), audio=False)
    b = make_video(media / "other.mp4", [13], size=(320, 240), audio=True)
    r = merge_clips(a, b, tmp_path / "m.mp4")
    assert r.method == "encode" and count_frames(r.path) == 25
    p = probe(r.path)
    assert (p.width, p.height) == (160, 90) and p.has_audio


def test_merge_rejects_bad_output(copy_split, tmp_path: Path) -> None:
    a, b = copy_split.clips[0].path, copy_split.clips[1].path
    with pytest.raises(InvalidInputError):
        merge_clips(a, b, a)
    with pytest.raises(InvalidInputError):
        merge_clips(a, b, tmp_path / "merged.mkv")
    assert _files(tmp_path) == []


def test_split_clip_at(encode_split, gop_video: Path, tmp_path: Path) -> None:
    clip = encode_split.clips[1]  # source frames [30, 75)
    r = split_clip_at(clip.path, 20, tmp_path)
    assert [(c.start_frame, c.end_frame) for c in r.clips] == [(0, 20), (20, 45)]
    assert [count_frames(c.path) for c in r.clips] == [20, 25]
    assert_same_frame(Path(r.clips[1].path), 0, gop_video, 50, 125)


@pytest.mark.parametrize("frame", [0, 45, 46, -3, 2.5])
def test_split_clip_at_rejects_frame_not_inside(encode_split, tmp_path: Path, frame) -> None:
    with pytest.raises(InvalidInputError):
        split_clip_at(encode_split.clips[1].path, frame, tmp_path / "out")
    assert _files(tmp_path / "out") == []


def test_real_sample_single_key_frame(tmp_path: Path) -> None:
    assert keyframe_indices(BBB) == [0]
    r = split_video(BBB, [(0, 40), (40, 97), (97, 132)], tmp_path)
    assert [c.method for c in r.clips] == ["encode"] * 3  # no cut lands before a key frame
    assert [count_frames(c.path) for c in r.clips] == [40, 57, 35]
    assert_same_frame(Path(r.clips[1].path), 0, BBB, 40, 132)
    assert_same_frame(Path(r.clips[2].path), 34, BBB, 131, 132)
    for c in r.clips:
        p = probe(c.path)
        assert (p.width, p.height) == (1280, 720) and p.faststart and p.has_audio


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heaters_media", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_split(gop_video: Path, tmp_path: Path) -> None:
    scenes = json.dumps([{"start_frame": 0, "end_frame": 50}, {"start_frame": 50, "end_frame": 77}])
    proc = _cli("split", str(gop_video), "--scenes", scenes, "--out", str(tmp_path / "o"), "-q")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "success"
    assert [c["frame_count"] for c in data["clips"]] == [50, 27]
    assert [c["method"] for c in data["clips"]] == ["copy", "encode"]

    bad = json.dumps([{"start_frame": 0, "end_frame": 500}])
    proc = _cli("split", str(gop_video), "--scenes", bad, "--out", str(tmp_path / "bad"), "-q")
    assert proc.returncode != 0
    data = json.loads(proc.stdout)
    assert data["status"] == "error" and data["error"]["type"] == "invalid_input"
    assert _files(tmp_path / "bad") == []


def test_tool_failure_leaves_nothing(gop_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ToolFailedError):
        split_video(gop_video, [(0, 25), (30, 60), (60, 90)], out, preset="no-such-preset")
    assert _files(out) == []


@pytest.mark.parametrize("template", ["{stem}.mp4", "{nope}.mp4", "../{start}.mp4", "{start}.mkv"])
def test_bad_name_template(gop_video: Path, tmp_path: Path, template: str) -> None:
    with pytest.raises(InvalidInputError):
        split_video(gop_video, [(0, 25), (30, 60)], tmp_path / "out", name_template=template)
    assert _files(tmp_path / "out") == []
