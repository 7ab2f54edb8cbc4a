"""Every ``python -m heaters_media`` command, run as a real subprocess, against its JSON contract.

The library functions have their own tests, but the platform (and a person debugging) talks to the
media layer through the command line: one JSON object on stdout, progress on stderr, and on failure
``{"status": "error", "error": {"type", "message"}}`` with a non-zero exit and no traceback. Those
promises live in ``heaters_media/cli.py`` (argument parsing, ``_emit``, Rich on stderr) and only a
subprocess exercises them, so each command is run here once for real and its output is checked for
exact values on inputs whose properties are known by construction:

* "ramp" clips, where frame *i* is flat grey with luma ``start + step * i``: the brightness of any
  decoded frame, key-frame JPEG or sprite tile says which source frame it is;
* the bundled Big Buck Bunny edit with its known cuts (``heaters_media.samples``) for ``pipeline``.

``test_every_command_is_covered`` fails when a command is added without a subprocess test here.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from heaters_media.probe import probe_video
from heaters_media.samples import SAMPLE_CUTS, SAMPLE_VIDEO
from tests.media_factory import count_frames, make_video

ROOT = Path(__file__).resolve().parents[2]
BBB = ROOT / "tests" / "data" / "bbb_720p_5s.mp4"

# Exit status of each error type (heaters_media/errors.py): callers may branch on either.
EXIT_CODES = {
    "invalid_input": 2,
    "unsupported_media": 3,
    "corrupt_media": 4,
    "download_failed": 5,
    "tool_failed": 6,
}

# The ramp clip every single-clip command works on: 50 frames at 20 fps, 160x90, with AAC audio.
RAMP_FRAMES, RAMP_FPS, RAMP_SIZE = 50, 20, (160, 90)
# Decoded to full-range grey, neighbouring ramp frames differ by 4 * 255 / 219 = 4.66 levels; a
# frame matches when it is within this distance (half the step is the ambiguity limit).
SAME_FRAME = 1.5


# --- running the CLI ------------------------------------------------------------------------------


def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heaters_media", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        env=env,
    )


def _one_json_object(stdout: str) -> dict[str, Any]:
    """The whole of stdout must be exactly one JSON object (no progress, no tables, no logs)."""
    lines = stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line, got {len(lines)}: {stdout[:500]!r}"
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def _success(*args: str | Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = _run(*args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    data = _one_json_object(proc.stdout)
    assert data["status"] == "success"
    return data


def _check_error(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The error contract, whatever the type: non-zero exit, one JSON error object, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode != 0
    data = _one_json_object(proc.stdout)
    assert set(data) == {"status", "error"}
    assert data["status"] == "error"
    error = data["error"]
    assert isinstance(error, dict) and {"type", "message"} <= set(error) <= {
        "type",
        "message",
        "details",
    }
    assert isinstance(error["message"], str) and error["message"].strip()
    assert error["type"] in EXIT_CODES
    assert proc.returncode == EXIT_CODES[error["type"]], (proc.returncode, error)
    return error


def _failure(*args: str | Path, kind: str) -> dict[str, Any]:
    error = _check_error(_run(*args))
    assert error["type"] == kind, error
    return error


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden staging/partial files included), relative, sorted."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- inputs with known properties -----------------------------------------------------------------


def _ramp_clip(
    path: Path,
    frames: int,
    *,
    start: int = 16,
    step: int = 4,
    fps: int = RAMP_FPS,
    size: tuple[int, int] = RAMP_SIZE,
    audio: bool = True,
) -> Path:
    """H.264 clip whose frame ``i`` is flat grey with luma ``start + step * i`` (faststart MP4)."""
    w, h = size
    video = f"color=c=black:s={w}x{h}:r={fps},geq=lum='{start}+{step}*N':cb=128:cr=128"
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", video]
    if audio:
        sine = f"sine=frequency=440:sample_rate=44100:duration={frames / fps}"
        cmd += ["-f", "lavfi", "-i", sine, "-map", "0:v", "-map", "1:a", "-c:a", "aac"]
    cmd += ["-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast"]
    cmd += ["-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)]
    subprocess.run(cmd, check=True)
    return path


def _frame_means(path: str | Path) -> np.ndarray:
    """Mean full-range grey level of every decoded video frame (the ramp clips' frame identity)."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-vf",
            "scale=16:16:flags=area,format=gray",
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 256).astype(np.float64).mean(axis=1)


def _which_frame(level: float, reference: np.ndarray) -> int:
    """Index of the reference frame with this grey level; fails when none is close enough."""
    distance = np.abs(reference - level)
    index = int(np.argmin(distance))
    assert distance[index] < SAME_FRAME, f"grey level {level:.1f} is no frame of the clip"
    return index


def _assert_same_frames(got: np.ndarray, want: np.ndarray) -> None:
    assert len(got) == len(want)
    worst = float(np.abs(got - want).max())
    assert worst < SAME_FRAME, f"frames differ from the expected ones by up to {worst:.1f} levels"


def _grey(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert img is not None, f"{path} does not decode"
    return img


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli_media")


@pytest.fixture(scope="module")
def ramp(media: Path) -> Path:
    """50 frames, 20 fps, 160x90, AAC mono 44.1 kHz, faststart; frame i has luma 16 + 4 i."""
    return _ramp_clip(media / "ramp.mp4", RAMP_FRAMES)


@pytest.fixture(scope="module")
def ramp_means(ramp: Path) -> np.ndarray:
    means = _frame_means(ramp)
    assert len(means) == RAMP_FRAMES
    assert float(np.diff(means).min()) > 2 * SAME_FRAME  # every frame is identifiable
    return means


@pytest.fixture(scope="module")
def rotated(media: Path) -> Path:
    """27 frames, 12 fps, 96x64, no audio, rotation 90, moov at the end (not faststart)."""
    plain = make_video(media / "plain.mp4", [27], fps=12, size=(96, 64), audio=False)
    out = media / "rotated.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-i", str(plain), "-c", "copy"),
            *("-metadata:s:v:0", "rotate=90", str(out)),
        ],
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def text_file(media: Path) -> Path:
    p = media / "notes.txt"
    p.write_text("not a video\n" * 20)
    return p


# --- the command list -----------------------------------------------------------------------------

# For each command: its arguments given (input file, a good clip, an output folder). The input is
# what the failure tests replace with a missing file or a text file.
ArgsFn = Callable[[Path, Path, Path], list[str]]
COMMANDS: dict[str, ArgsFn] = {
    "probe": lambda f, clip, out: ["probe", str(f)],
    "ingest": lambda f, clip, out: ["ingest", str(f), "--out", str(out), "-q"],
    "detect-scenes": lambda f, clip, out: ["detect-scenes", str(f), "-q"],
    "split": lambda f, clip, out: [
        "split",
        str(f),
        "--scenes",
        '[{"start_frame": 0, "end_frame": 10}]',
        "--out",
        str(out),
        "-q",
    ],
    "keyframes": lambda f, clip, out: ["keyframes", str(f), "--out", str(out)],
    "sprite": lambda f, clip, out: ["sprite", str(f), "--out", str(out / "s.jpg")],
    "merge": lambda f, clip, out: ["merge", str(clip), str(f), "--out", str(out / "m.mp4")],
    "split-at": lambda f, clip, out: ["split-at", str(f), "--frame", "5", "--out", str(out)],
    "pipeline": lambda f, clip, out: ["pipeline", str(f), "--out", str(out), "-q"],
    "embed": lambda f, clip, out: ["embed", str(f), "--model", "heaters/pixels-v1"],
}


def test_every_command_is_covered() -> None:
    """A new command must get a subprocess test (and a row in COMMANDS for the failure tests)."""
    from heaters_media.cli import app

    registered = {c.name for c in app.registered_commands}
    assert registered == set(COMMANDS)
    help_text = _run("--help")
    assert help_text.returncode == 0
    for name in COMMANDS:
        assert f" {name} " in help_text.stdout, name


# --- probe ----------------------------------------------------------------------------------------


def test_probe_generated_clip(ramp: Path) -> None:
    data = _success("probe", ramp)
    assert data["path"] == str(ramp)
    assert data["size"] == ramp.stat().st_size
    assert (data["frame_count"], data["declared_frames"]) == (50, 50)
    assert (data["fps"], data["fps_fraction"], data["is_vfr"]) == (20.0, "20/1", False)
    assert (data["width"], data["height"], data["rotation"]) == (160, 90, 0)
    assert data["duration"] == pytest.approx(2.5, abs=1e-3)
    assert (data["video_codec"], data["pix_fmt"]) == ("h264", "yuv420p")
    assert (data["audio_codec"], data["audio_channels"], data["audio_sample_rate"]) == (
        "aac",
        1,
        44100,
    )
    assert data["faststart"] is True
    assert data["start_time"] == pytest.approx(0.0, abs=1e-3)
    assert data["frame_count"] == count_frames(ramp)


def test_probe_rotated_silent_clip_without_faststart(rotated: Path) -> None:
    data = _success("probe", rotated)
    assert (data["frame_count"], data["fps"], data["fps_fraction"]) == (27, 12.0, "12/1")
    # Stored 96x64 with a quarter-turn display matrix: the frames are 64x96 as decoded.
    assert (data["width"], data["height"], data["rotation"]) == (64, 96, 90)
    assert (data["coded_width"], data["coded_height"]) == (96, 64)
    assert data["duration"] == pytest.approx(27 / 12, abs=1e-3)
    assert data["audio_codec"] is None and data["audio_channels"] is None
    assert data["faststart"] is False
    assert data["frame_count"] == count_frames(rotated)


def test_probe_real_sample() -> None:
    data = _success("probe", BBB)
    assert (data["width"], data["height"], data["fps"]) == (1280, 720, 25.0)
    assert data["frame_count"] == count_frames(BBB) == 132
    assert data["duration"] == pytest.approx(132 / 25, abs=1e-3)
    assert (data["audio_codec"], data["audio_channels"], data["audio_sample_rate"]) == (
        "aac",
        6,
        48000,
    )


def test_probe_truncated_file_is_corrupt_unless_no_verify(ramp: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = ramp.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])  # moov first: the header still declares 50
    error = _failure("probe", cut, kind="corrupt_media")
    assert "truncated" in error["message"]
    assert error["details"]["declared"] == 50
    assert 0 < error["details"]["present"] < 50

    lenient = _success("probe", cut, "--no-verify")
    assert lenient["frame_count"] == 50  # the container's own count, not checked


# --- keyframes ------------------------------------------------------------------------------------


def test_keyframes_multi(ramp: Path, ramp_means: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "kf"
    data = _success("keyframes", ramp, "--strategy", "multi", "--out", out)
    assert data["clip"] == str(ramp)
    assert (data["strategy"], data["frame_count"], data["fps"]) == ("multi", 50, 20.0)
    assert (data["width"], data["height"]) == (160, 90)
    # floor(50 * p / 100) for p = 25, 50, 75; time = index / 20 fps.
    assert [(k["pct"], k["frame_index"], k["timestamp"]) for k in data["keyframes"]] == [
        (25, 12, 0.6),
        (50, 25, 1.25),
        (75, 37, 1.85),
    ]
    names = [f"ramp_multi_{p}.jpg" for p in (25, 50, 75)]
    assert [k["path"] for k in data["keyframes"]] == [str(out / n) for n in names]
    assert _files(out) == sorted(names)  # nothing else (no staging left behind)
    for k in data["keyframes"]:
        img = _grey(k["path"])
        assert img.shape == (90, 160)
        assert _which_frame(float(img.mean()), ramp_means) == k["frame_index"]


def test_keyframes_default_is_midpoint_beside_the_clip(
    ramp: Path, ramp_means: np.ndarray, tmp_path: Path
) -> None:
    clip = Path(shutil.copy(ramp, tmp_path / "c.mp4"))
    data = _success("keyframes", clip)
    assert data["strategy"] == "midpoint"
    assert [(k["pct"], k["frame_index"]) for k in data["keyframes"]] == [(50, 25)]
    assert data["keyframes"][0]["path"] == str(tmp_path / "c_midpoint_50.jpg")
    assert _files(tmp_path) == ["c.mp4", "c_midpoint_50.jpg"]
    img = _grey(tmp_path / "c_midpoint_50.jpg")
    assert img.shape == (90, 160)
    assert _which_frame(float(img.mean()), ramp_means) == 25


# --- sprite ---------------------------------------------------------------------------------------


def _tile_levels(img: np.ndarray, cols: int, rows: int, tw: int, th: int) -> list[float]:
    """Mean grey of each tile (row-major), away from its edges (JPEG blocks straddle tiles)."""
    m = 6
    return [
        float(img[r * th + m : (r + 1) * th - m, c * tw + m : (c + 1) * tw - m].mean())
        for r in range(rows)
        for c in range(cols)
    ]


def test_sprite(ramp: Path, ramp_means: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "sheet.jpg"
    data = _success(
        "sprite", ramp, "--out", out, "--tile-width", "64", "--max-fps", "4", "--cols", "4"
    )
    # 2.5 s at 4 fps = 10 tiles in 4 columns -> 3 rows; 64 px wide tiles of a 16:9 clip are 36 high.
    expected = {
        "path": str(out),
        "json_path": str(tmp_path / "sheet.json"),
        "clip": str(ramp),
        "cols": 4,
        "rows": 3,
        "tile_width": 64,
        "tile_height": 36,
        "frame_count": 10,
        "sprite_fps": 4.0,
        "sprite_fps_fraction": "4/1",
        "clip_fps": 20.0,
        "clip_frame_count": 50,
        "width": 256,
        "height": 108,
    }
    assert {k: data[k] for k in expected} == expected
    assert data["duration"] == pytest.approx(2.5, abs=1e-3)
    assert _files(tmp_path) == ["sheet.jpg", "sheet.json"]

    img = _grey(out)
    assert img.shape == (data["height"], data["width"])
    levels = _tile_levels(img, 4, 3, 64, 36)
    # Tile k covers [k / 4 s, (k + 1) / 4 s): a frame 5k .. 5k + 4 of the 20 fps clip, in order.
    shown = [_which_frame(level, ramp_means) for level in levels[:10]]
    for k, frame in enumerate(shown):
        assert 5 * k <= frame < 5 * (k + 1), (k, shown)
    assert max(levels[10:]) < 3  # the two cells past frame_count are empty (black)

    meta = json.loads((tmp_path / "sheet.json").read_text())
    del expected["json_path"]  # the metadata file names its image instead
    assert {k: meta[k] for k in expected} == expected
    assert meta["image"] == "sheet.jpg"
    assert meta["tile_seconds"] == 0.25


def test_sprite_defaults(ramp: Path, tmp_path: Path) -> None:
    """README: tiles 480 px wide, at most 24 fps (never above the clip's), 5 columns, beside it."""
    clip = Path(shutil.copy(ramp, tmp_path / "c.mp4"))
    data = _success("sprite", clip)
    assert data["path"] == str(tmp_path / "c_sprite.jpg")
    assert data["json_path"] == str(tmp_path / "c_sprite.json")
    assert (data["tile_width"], data["tile_height"]) == (480, 270)
    assert (data["sprite_fps"], data["frame_count"]) == (20.0, 50)  # 20 fps clip: one tile each
    assert (data["cols"], data["rows"]) == (5, 10)
    img = _grey(data["path"])
    assert img.shape == (10 * 270, 5 * 480) == (data["height"], data["width"])
    assert _files(tmp_path) == ["c.mp4", "c_sprite.jpg", "c_sprite.json"]


# --- split-at and merge ---------------------------------------------------------------------------


def test_split_at(ramp: Path, ramp_means: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    data = _success("split-at", ramp, "--frame", "20", "--out", out)
    assert (data["source"], data["source_frame_count"], data["fps"]) == (str(ramp), 50, 20.0)
    clips = data["clips"]
    assert [(c["start_frame"], c["end_frame"], c["frame_count"]) for c in clips] == [
        (0, 20, 20),
        (20, 50, 30),
    ]
    assert [(c["start_time"], c["end_time"]) for c in clips] == [(0.0, 1.0), (1.0, 2.5)]
    assert _files(out) == sorted(Path(c["path"]).name for c in clips)
    for c in clips:
        assert Path(c["path"]).parent == out
        assert count_frames(c["path"]) == c["frame_count"]
        assert c["size"] == Path(c["path"]).stat().st_size
    # The parts hold exactly the source's frames 0..19 and 20..49, in order.
    _assert_same_frames(_frame_means(clips[0]["path"]), ramp_means[:20])
    _assert_same_frames(_frame_means(clips[1]["path"]), ramp_means[20:])


def test_split_at_frame_outside_the_clip(ramp: Path, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    error = _failure("split-at", ramp, "--frame", "50", "--out", out, kind="invalid_input")
    assert error["details"] == {"frame": 50, "frame_count": 50}
    assert _files(out) == []


@pytest.fixture(scope="module")
def descending(media: Path) -> Path:
    """30 frames like the ramp clip (same encoder settings, with audio) but getting darker."""
    return _ramp_clip(media / "descending.mp4", 30, start=220, step=-5)


@pytest.fixture(scope="module")
def small(media: Path) -> Path:
    """15 frames at 128x72, no audio: cannot be joined to the ramp clip by stream copy."""
    return _ramp_clip(media / "small.mp4", 15, start=40, step=9, size=(128, 72), audio=False)


@pytest.mark.parametrize(
    ("second", "method", "b_frames"), [("descending", "copy", 30), ("small", "encode", 15)]
)
def test_merge(
    request: pytest.FixtureRequest,
    ramp: Path,
    ramp_means: np.ndarray,
    tmp_path: Path,
    second: str,
    method: str,
    b_frames: int,
) -> None:
    b: Path = request.getfixturevalue(second)
    out = tmp_path / "merged.mp4"
    data = _success("merge", ramp, b, "--out", out)
    assert (data["path"], data["a"], data["b"]) == (str(out), str(ramp), str(b))
    assert (data["a_frames"], data["b_frames"]) == (50, b_frames)
    assert data["frame_count"] == 50 + b_frames
    assert (data["fps"], data["method"]) == (20.0, method)
    assert data["size"] == out.stat().st_size
    assert _files(tmp_path) == ["merged.mp4"]

    probed = _success("probe", out)
    assert probed["frame_count"] == count_frames(out) == 50 + b_frames
    assert (probed["width"], probed["height"], probed["fps"]) == (160, 90, 20.0)
    assert probed["audio_codec"] == "aac" and probed["faststart"] is True
    # All of a then all of b, each frame once, in order.
    _assert_same_frames(_frame_means(out), np.concatenate([ramp_means, _frame_means(b)]))


def test_merge_refuses_a_non_mp4_output(ramp: Path, descending: Path, tmp_path: Path) -> None:
    error = _failure("merge", ramp, descending, "--out", tmp_path / "m.mkv", kind="invalid_input")
    assert "m.mkv" in error["message"]
    assert _files(tmp_path) == []


# --- pipeline -------------------------------------------------------------------------------------


def _check_pipeline_clips(data: dict[str, Any], out: Path, size: tuple[int, int]) -> None:
    """Clips tile the video, exist with their frame counts, and have their key frames and sprite."""
    clips = data["clips"]
    assert clips[0]["start_frame"] == 0 and clips[-1]["end_frame"] == data["frames"]
    for prev, nxt in itertools.pairwise(clips):
        assert prev["end_frame"] == nxt["start_frame"]
    fps = data["fps"]
    for c in clips:
        assert c["frames"] == c["end_frame"] - c["start_frame"]
        assert c["start_time"] == pytest.approx(c["start_frame"] / fps, abs=1e-6)
        assert c["end_time"] == pytest.approx(c["end_frame"] / fps, abs=1e-6)
        path = out / "clips" / c["clip"]
        assert count_frames(path) == c["frames"], c["clip"]
        # A clip file's artifacts sit in the folder of its name; a review proxy is in it.
        art = path.parent if c["method"] == "proxy" else path.with_suffix("")
        assert c["keyframes"] == [f"{art.name}_multi_{p}.jpg" for p in (25, 50, 75)]
        for name in c["keyframes"]:
            assert _grey(art / name).shape == (size[1], size[0])
        meta = json.loads((art / "sprite.json").read_text())
        assert c["sprite"] == f"{meta['cols']}x{meta['rows']} tiles @ {meta['sprite_fps']:g} fps"
        assert meta["clip_frame_count"] == c["frames"]
        assert _grey(art / "sprite.jpg").shape == (
            meta["rows"] * meta["tile_height"],
            meta["cols"] * meta["tile_width"],
        )


def test_pipeline_bundled_sample(tmp_path: Path) -> None:
    """No source: the bundled edit, whose cuts are known. Not quiet: progress stays on stderr."""
    out = tmp_path / "demo"
    # Make Rich treat the stderr pipe as an interactive terminal, so the progress bar is drawn.
    tty = {
        "TTY_COMPATIBLE": "1",
        "TTY_INTERACTIVE": "1",
        "TERM": "xterm-256color",
        "COLUMNS": "160",
    }
    env = {**os.environ, **tty}
    proc = _run("pipeline", "--out", out, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    data = _one_json_object(proc.stdout)  # a progress bar or the table on stdout breaks this
    assert data["status"] == "success"

    total = count_frames(SAMPLE_VIDEO)
    assert Path(data["source"]).resolve() == SAMPLE_VIDEO.resolve()
    assert data["out_dir"] == str(out)
    assert Path(data["video"]).is_file() and Path(data["video"]).parent == out / "source"
    assert (data["frames"], data["fps"]) == (total, 25.0)
    assert data["duration"] == pytest.approx(total / 25, abs=0.01)
    assert data["scenes"] == len(data["clips"]) == len(SAMPLE_CUTS) + 1
    assert [c["start_frame"] for c in data["clips"][1:]] == SAMPLE_CUTS
    assert set(data["timings"]) == {"ingest", "detect_scenes", "split", "artifacts"}
    _check_pipeline_clips(data, out, (640, 360))

    # The summary table and the progress bar (its label, its stage messages) went to stderr.
    stderr = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", proc.stderr)  # drop terminal escapes
    assert f"{total} frames" in stderr and f"-> {len(SAMPLE_CUTS) + 1} clips" in stderr
    assert "pipeline" in stderr and "artifacts: clip" in stderr


def test_pipeline_local_file_with_known_cuts(media: Path, tmp_path: Path) -> None:
    scenes = [30, 40, 35]
    video = make_video(media / "three_shots.mp4", scenes, size=(160, 90))
    out = tmp_path / "run"
    data = _success("pipeline", video, "--out", out, "--detector", "content", "-q")
    assert data["source"] == str(video)
    assert data["frames"] == sum(scenes) and data["fps"] == 25.0
    assert len(data["clips"]) == data["scenes"] == 3  # two cuts
    assert [c["frames"] for c in data["clips"]] == scenes
    _check_pipeline_clips(data, out, (160, 90))


def test_pipeline_review_proxies_instead_of_clip_files(media: Path, tmp_path: Path) -> None:
    """``--clips proxy``: no clip file is cut; each clip gets a frame-exact proxy at 360 lines
    at most (never enlarged), beside keyframes at the source's full size and its sprite."""
    scenes = [30, 40, 35]
    video = make_video(media / "three_shots_720.mp4", scenes, size=(640, 480))
    out = tmp_path / "run"
    args = ("pipeline", video, "--out", out, "--detector", "content", "--clips", "proxy", "-q")
    data = _success(*args)
    assert data["clip_mode"] == "proxy"
    assert set(data["timings"]) == {"ingest", "detect_scenes", "artifacts"}
    assert [c["frames"] for c in data["clips"]] == scenes
    assert {c["method"] for c in data["clips"]} == {"proxy"}
    _check_pipeline_clips(data, out, (640, 480))
    assert list((out / "clips").glob("*.mp4")) == []  # no full-quality clip files
    for c in data["clips"]:
        assert probe_video(out / "clips" / c["clip"]).display_size == (480, 360)

    bad = ("pipeline", video, "--out", tmp_path / "bad", "--clips", "nope", "-q")
    assert "exact, proxy" in _failure(*bad, kind="invalid_input")["message"]


# --- failures, one per command --------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_input_is_a_json_error(command: str, ramp: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_file.mp4"
    out = tmp_path / "out"
    error = _failure(*COMMANDS[command](missing, ramp, out), kind="invalid_input")
    assert "no_such_file.mp4" in error["message"]
    assert _files(out) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_text_file_input_is_a_json_error(
    command: str, ramp: Path, text_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    _failure(*COMMANDS[command](text_file, ramp, out), kind="corrupt_media")
    assert _files(out) == []


# --- bad output folders and scenes files: typed errors, not tracebacks ----------------------------


@pytest.mark.parametrize("command", ["split", "keyframes", "sprite", "merge", "split-at"])
def test_output_below_a_regular_file_is_a_json_error(
    command: str, ramp: Path, text_file: Path
) -> None:
    _check_error(_run(*COMMANDS[command](ramp, ramp, text_file / "sub")))


def test_split_scenes_file_missing_is_a_json_error(ramp: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_scenes.json"
    _check_error(_run("split", ramp, "--scenes", missing, "--out", tmp_path / "out", "-q"))


def test_split_scenes_naming_a_folder_is_a_json_error(ramp: Path, tmp_path: Path) -> None:
    error = _check_error(_run("split", ramp, "--scenes", tmp_path, "--out", tmp_path / "o", "-q"))
    assert error["type"] == "invalid_input" and "Is a directory" in error["message"]
    assert _files(tmp_path / "o") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--threshold", "nan"), "adaptive threshold must be > 0 and finite, got nan"),
        (("--threshold", "inf"), "adaptive threshold must be > 0 and finite, got inf"),
        (("--threshold", "0"), "adaptive threshold must be > 0 and finite, got 0.0"),
        (("--threshold", "-5"), "adaptive threshold must be > 0 and finite, got -5.0"),
        (("--detector", "content", "--threshold", "300"), "content threshold must be > 0 and"),
        (("--detector", "histogram", "--threshold", "1.5"), "histogram threshold must be > 0"),
        (("--analysis-width", "0"), "analysis_width must be an integer >= 16 pixels, got 0"),
        (("--analysis-width", "-160"), "analysis_width must be an integer >= 16 pixels"),
        (("--min-scene-len", "nan"), "min_scene_len must be a finite number of seconds >= 0"),
        (("--min-scene-len", "-1"), "min_scene_len must be a finite number of seconds >= 0"),
    ],
)
def test_meaningless_detection_parameters_are_refused(
    ramp: Path, args: tuple[str, ...], message: str
) -> None:
    """NaN compared false with every score (no cut, silently) and 0 meant "the default": both
    are now refused as invalid_input before anything is decoded."""
    error = _failure("detect-scenes", ramp, "-q", *args, kind="invalid_input")
    assert message in error["message"]


def test_explicit_analysis_width_is_used_not_replaced(ramp: Path) -> None:
    data = _success("detect-scenes", ramp, "-q", "--analysis-width", "16")
    assert data["metadata"]["analysis_width"] == 16
    assert _success("detect-scenes", ramp, "-q")["metadata"]["analysis_width"] == 160


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("split",), "Missing argument"),
        (("nope",), "No such command"),
        (("probe", "--bogus", "x"), "No such option"),
    ],
)
def test_usage_mistakes_are_json_errors(args: tuple[str, ...], message: str) -> None:
    proc = _run(*args)
    error = _check_error(proc)
    assert proc.returncode == 2
    assert error["type"] == "invalid_input" and message in error["message"]


def test_help_is_still_text() -> None:
    proc = _run("--help")
    assert proc.returncode == 0 and "split" in proc.stdout and not proc.stdout.startswith("{")
