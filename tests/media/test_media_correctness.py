"""Media correctness on awkward inputs: rotated phone video, anamorphic pixels, variable frame
rate, and merging clips of different shapes.

Each input is made with real ffmpeg so its true picture is known: a frame white on its left
half and black on its right is, once a 90 degree display rotation is applied, white on one
half *vertically*. Reading the pixels of what the engine wrote (JPEGs, sprite tiles, merged
frames) shows whether rotation and aspect were honoured, not merely whether sizes add up.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from heaters_media.artifacts import make_clip_artifacts
from heaters_media.consumers import ClipRange, KeyframeConsumer, SpriteConsumer
from heaters_media.ingest import ingest
from heaters_media.keyframes import extract_keyframes
from heaters_media.merge import merge_clips
from heaters_media.probe import probe
from heaters_media.split import split_video
from heaters_media.sprite import make_sprite

_PROBE = ("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _rotate(src: Path, dst: Path) -> None:
    """Stream-copy ``src`` with a quarter-turn display matrix. ffmpeg 5.1 writes one from the
    ``rotate`` tag; later versions dropped that for the ``-display_rotation`` input option."""
    _ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v", "rotate=90", str(dst))
    if probe(dst).rotation == 0:
        _ffmpeg("-display_rotation", "90", "-i", str(src), "-c", "copy", str(dst))


def _size(path: Path) -> tuple[int, int]:
    """Stored size of an image or an unrotated video (ffprobe's width x height)."""
    out = subprocess.run(
        [*_PROBE, "stream=width,height", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    s = json.loads(out)["streams"][0]
    return int(s["width"]), int(s["height"])


def _gray(path: Path, size: tuple[int, int], index: int = 0) -> np.ndarray:
    """Frame ``index`` of ``path`` as decoded (rotation applied), grey, at its own ``size``."""
    w, h = size
    raw = subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-i", str(path)),
            *("-vf", f"select=eq(n\\,{index}),format=gray", "-fps_mode", "passthrough"),
            *("-frames:v", "1", "-f", "rawvideo", "-"),
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert len(raw) == w * h, f"frame {index} of {path.name} is not {w}x{h}"
    return np.frombuffer(raw, np.uint8).reshape(h, w).astype(float)


def _split_vertically(img: np.ndarray) -> bool:
    """One half white and the other black top/bottom, the same left/right (not squashed into
    another orientation)."""
    h, w = img.shape
    top, bottom = img[: h // 2 - 2].mean(), img[h // 2 + 2 :].mean()
    left, right = img[:, : w // 2].mean(), img[:, w // 2 :].mean()
    return abs(top - bottom) > 150 and abs(left - right) < 20


def _white_width(img: np.ndarray) -> int:
    """Columns of the middle row that are white: the width of a pillarboxed picture."""
    return int((img[img.shape[0] // 2] > 128).sum())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("correctness")
    half = "drawbox=x=0:y=0:w=160:h=180:color=white:t=fill"
    _ffmpeg(
        "-f", "lavfi", "-i", "color=c=black:s=320x180:r=25:d=1",
        "-f", "lavfi", "-i", "sine=d=1", "-vf", half, "-c:v", "libx264", "-pix_fmt", "yuv420p",
        "-g", "10", "-c:a", "aac", "-shortest", str(d / "halves.mp4"),
    )  # fmt: skip
    # A phone video: pixels stored landscape, a display matrix turning them a quarter.
    _rotate(d / "halves.mp4", d / "rotated.mp4")
    # Anamorphic: 320x180 stored, each pixel twice as wide as high (shown 640x180).
    _ffmpeg("-f", "lavfi", "-i", "color=c=white:s=320x180:r=25:d=1", "-vf", "setsar=2",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "anamorphic.mp4"))  # fmt: skip
    for name, size in (("white_wide", "320x180"), ("white_tall", "180x320")):
        _ffmpeg("-f", "lavfi", "-i", f"color=c=white:s={size}:r=25:d=0.4", "-f", "lavfi",
                "-i", "sine=d=0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                "-shortest", str(d / f"{name}.mp4"))  # fmt: skip
    _rotate(d / "white_wide.mp4", d / "white_wide_rotated.mp4")
    # Variable frame rate: 15 frames at 25 fps, then 15 at 10 fps (frame 15 at 0.6 s).
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=1.2", "-vf",
            "setpts='if(lt(N,15),N/25,0.6+(N-15)/10)/TB'", "-fps_mode", "vfr", "-an",
            "-c:v", "libx264", "-preset", "veryfast", str(d / "vfr.mp4"))  # fmt: skip
    return d


# --- rotation ------------------------------------------------------------------------------------


def test_probe_reports_the_displayed_size(media: Path) -> None:
    p = probe(media / "rotated.mp4")
    assert p.rotation in (90, 270) and (p.width, p.height) == (180, 320)
    assert (p.coded_width, p.coded_height) == (320, 180)
    assert p.display_size == (180, 320)
    assert probe(media / "halves.mp4").display_size == (320, 180)


def test_keyframes_of_rotated_video_are_upright_and_sized_as_reported(
    media: Path, tmp_path: Path
) -> None:
    r = extract_keyframes(media / "rotated.mp4", "multi", tmp_path)
    assert (r.width, r.height) == (180, 320)
    for kf in r.keyframes:
        assert _size(Path(kf.path)) == (r.width, r.height)
        assert _split_vertically(_gray(Path(kf.path), (r.width, r.height)))


def test_sprite_tiles_of_rotated_video_keep_the_displayed_aspect(
    media: Path, tmp_path: Path
) -> None:
    s = make_sprite(media / "rotated.mp4", tmp_path / "s.jpg", tile_width=90, cols=5, max_fps=5)
    assert (s.tile_width, s.tile_height) == (90, 160)  # 180x320 shape, not 320x180
    assert _size(tmp_path / "s.jpg") == (s.width, s.height) == (s.cols * 90, s.rows * 160)
    sheet = _gray(tmp_path / "s.jpg", (s.width, s.height))
    assert _split_vertically(sheet[:160, :90])  # the first tile


def test_one_pass_artifacts_of_rotated_video_match_their_metadata(
    media: Path, tmp_path: Path
) -> None:
    clips = [ClipRange(0, 0, 10, "a"), ClipRange(1, 10, 25, "b")]
    res = make_clip_artifacts(
        media / "rotated.mp4",
        clips,
        tmp_path,
        keyframes=KeyframeConsumer(),
        sprite=SpriteConsumer(tile_width=90),
    )
    assert res.failed == []
    for made in res.clips:
        assert made.keyframes is not None and made.sprite is not None
        assert (made.keyframes.width, made.keyframes.height) == (180, 320)
        for kf in made.keyframes.keyframes:
            assert _size(Path(kf.path)) == (180, 320)
            assert _split_vertically(_gray(Path(kf.path), (180, 320)))
        assert made.sprite.tile_height == 160
        assert _size(Path(made.sprite.path)) == (made.sprite.width, made.sprite.height)


def test_ingest_bakes_rotation_into_the_pixels(media: Path, tmp_path: Path) -> None:
    res = ingest(media / "rotated.mp4", tmp_path)
    assert res.normalize_action == "transcode"
    assert any("rotation" in r for r in res.normalize_reasons)
    out = Path(res.normalized_path)
    p = probe(out)
    assert (p.rotation, p.width, p.height) == (0, 180, 320)
    assert _size(out) == (180, 320)  # stored upright, no display matrix left
    assert _split_vertically(_gray(out, (180, 320), 5))


def test_split_of_rotated_video_keeps_it_upright(media: Path, tmp_path: Path) -> None:
    r = split_video(media / "rotated.mp4", [(0, 10), (10, 17), (17, 25)], tmp_path)
    assert {c.method for c in r.clips} == {"copy", "encode"}
    for clip in r.clips:
        p = probe(clip.path)
        assert (p.width, p.height) == (180, 320)
        assert _split_vertically(_gray(Path(clip.path), (180, 320)))


# --- anamorphic pixels ---------------------------------------------------------------------------


def test_anamorphic_keyframes_and_sprite_have_square_pixels(media: Path, tmp_path: Path) -> None:
    p = probe(media / "anamorphic.mp4")
    assert (p.width, p.height, p.sample_aspect_ratio, p.display_size) == (
        320,
        180,
        "2:1",
        (640, 180),
    )
    r = extract_keyframes(media / "anamorphic.mp4", "midpoint", tmp_path)
    assert (r.width, r.height) == (640, 180) == _size(Path(r.keyframes[0].path))
    s = make_sprite(media / "anamorphic.mp4", tmp_path / "s.jpg", tile_width=64)
    assert (s.tile_width, s.tile_height) == (64, 18)


# --- variable frame rate -------------------------------------------------------------------------


def _frame_times(path: Path) -> list[float]:
    out = subprocess.run(
        [*_PROBE, "frame=pts_time", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    times = sorted(float(f["pts_time"]) for f in json.loads(out)["frames"])
    return [t - times[0] for t in times]


def test_vfr_split_times_are_the_frames_own(media: Path, tmp_path: Path) -> None:
    src = media / "vfr.mp4"
    assert probe(src).is_vfr
    truth = _frame_times(src)
    assert len(truth) == 30
    r = split_video(src, [(0, 15), (15, 20), (20, 30)], tmp_path)
    starts = [c.start_time for c in r.clips]
    assert starts == pytest.approx([truth[0], truth[15], truth[20]], abs=1e-6)
    # The average rate would put frame 20 at 20 / fps, over a tenth of a second away.
    assert starts[:2] == pytest.approx([0.0, 0.6], abs=1e-3)
    assert abs(starts[2] - 20 / probe(src).fps) > 0.1
    assert [c.end_time for c in r.clips[:-1]] == pytest.approx(starts[1:], abs=1e-6)
    # The last clip ends after its last frame's time, by that frame's recorded duration.
    assert truth[29] < r.clips[-1].end_time <= truth[29] + 0.1 + 1e-6


# --- merging clips of different shapes -----------------------------------------------------------


@pytest.mark.parametrize(
    "b,pillar",
    [
        ("white_tall.mp4", round(180 * 180 / 320)),  # portrait clip: pillarboxed, ~101 px wide
        ("white_wide_rotated.mp4", round(180 * 180 / 320)),  # stored wide, shown tall
        ("white_wide.mp4", 320),  # the same shape fills the frame
    ],
)
def test_merge_fits_b_into_a_with_its_aspect_kept(
    media: Path, tmp_path: Path, b: str, pillar: int
) -> None:
    out = tmp_path / "m.mp4"
    r = merge_clips(media / "halves.mp4", media / b, out)
    assert _size(out) == (320, 180)
    frames_a = probe(media / "halves.mp4").frame_count
    assert r.frame_count == frames_a + probe(media / b).frame_count
    first_b = _gray(out, (320, 180), frames_a + 2)
    assert abs(_white_width(first_b) - pillar) <= 4
    # a itself is untouched: its left half white, right half black.
    first_a = _gray(out, (320, 180), 2)
    assert first_a[:, :150].mean() > 200 and first_a[:, 170:].mean() < 50


def test_merge_never_stream_copies_across_a_rotation(media: Path, tmp_path: Path) -> None:
    """Same codec parameters, but b carries a display matrix: a stream copy would show b with
    a's (no) rotation, so the clips are re-encoded and b appears upright, pillarboxed."""
    out = tmp_path / "m.mp4"
    r = merge_clips(media / "white_wide.mp4", media / "white_wide_rotated.mp4", out)
    assert r.method == "encode"
    assert abs(_white_width(_gray(out, (320, 180), r.a_frames + 2)) - 101) <= 4


def test_merge_takes_the_displayed_shape_of_an_anamorphic_first_clip(
    media: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.mp4"
    r = merge_clips(media / "anamorphic.mp4", media / "white_wide.mp4", out)
    assert _size(out) == (640, 180) and probe(out).sample_aspect_ratio == "1:1"
    assert _white_width(_gray(out, (640, 180), 1)) >= 636  # a fills its own frame
    assert abs(_white_width(_gray(out, (640, 180), r.a_frames + 2)) - 320) <= 4
