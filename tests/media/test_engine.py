"""The one-pass media engine: windows of clips re-encoded in one ffmpeg pass (frame counts exact
on hostile GOP structures) and keyframes + sprites of many clips from one decode of the source
(the same frame indices and tiles as the per-clip functions they replace)."""

from __future__ import annotations

import json
import os
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heaters_media import split as split_module
from heaters_media.artifacts import (
    ClipRange,
    KeyframeConsumer,
    SpriteConsumer,
    make_clip_artifacts,
    plan_windows,
)
from heaters_media.consumers import Source
from heaters_media.encode_pass import Piece, encode_window, plan_runs
from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.keyframes import extract_keyframes
from heaters_media.normalize import normalize
from heaters_media.probe import clip_is_exact, keyframe_indices, probe_video, read_packets
from heaters_media.split import split_video
from heaters_media.sprite import make_sprite
from tests.media.test_split import assert_same_frame
from tests.media_factory import count_frames, make_video

# Scenes of 70/80/70/80 frames: with the key-frame intervals below no cut is on a key frame.
SCENES = [70, 80, 70, 80]
CUTS = [(0, 70), (70, 150), (150, 220), (220, 300)]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


def _source(kind: str, d: Path) -> Path:
    if kind == "long_gop_250":
        return make_video(d / "long.mp4", SCENES, gop=250)
    if kind == "short_gop":
        return make_video(d / "short.mp4", SCENES, gop=12)
    if kind == "open_gop_bframes":
        extra = ["-x264-params", "open-gop=1:bframes=3:b-pyramid=normal"]
        return make_video(d / "open.mp4", SCENES, gop=100, extra=extra)
    if kind == "odd_size":
        return make_video(d / "odd.mp4", SCENES, gop=250, size=(202, 114))
    assert kind == "normalized_vfr"
    base = make_video(d / "base.mp4", SCENES, gop=250, audio=False)
    vfr = d / "vfr.mp4"
    _ffmpeg(
        "-i",
        str(base),
        "-vf",
        "setpts='if(lt(N,100),N/25,4+(N-100)/20)/TB'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        str(vfr),
    )
    assert probe_video(vfr).is_vfr
    out = d / "vfr_normalized.mp4"
    normalize(vfr, out)
    return out


KINDS = ["long_gop_250", "short_gop", "open_gop_bframes", "odd_size", "normalized_vfr"]


@pytest.mark.parametrize("kind", KINDS)
def test_one_pass_cut_is_frame_exact(
    kind: str, media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _source(kind, media)

    def per_clip_encode(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a clip was re-encoded alone: the one-pass cut missed it")

    # The window pass must get every clip right by itself (the per-clip cut is a fallback).
    monkeypatch.setattr(split_module, "_encode_clip", per_clip_encode)
    total = probe_video(src).frame_count
    cuts = [(a, min(b, total)) for a, b in CUTS if a < total]
    keys = set(keyframe_indices(src))
    assert not any(a in keys for a, _ in cuts[1:]) or kind == "short_gop"
    # crf 14: near-lossless, so "same frame" is told apart from a neighbour by a wide margin.
    result = split_video(src, cuts, tmp_path / "clips", workers=1, allow_copy=False, crf=14)
    assert [c.method for c in result.clips] == ["encode"] * len(cuts)
    for clip, (a, b) in zip(result.clips, cuts, strict=True):
        assert count_frames(clip.path) == b - a == clip.frame_count
        assert clip_is_exact(Path(clip.path), b - a)
        assert_same_frame(Path(clip.path), 0, src, a, total)
        assert_same_frame(Path(clip.path), b - a - 1, src, b - 1, total)


def test_one_pass_keeps_audio_with_each_clip(media: Path, tmp_path: Path) -> None:
    src = _source("long_gop_250", media)
    result = split_video(src, CUTS, tmp_path / "clips", workers=1)
    query = ["-select_streams", "a:0", "-show_entries", "stream=duration", "-of", "csv=p=0"]

    def audio_seconds(path: str | Path) -> float:
        out = subprocess.run(
            ["ffprobe", "-v", "error", *query, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout)

    audio_end = audio_seconds(src)  # the generated sine ends before the last frame
    for clip in result.clips:
        info = probe_video(Path(clip.path))
        assert info.has_audio and info.audio_codec == "aac" and info.faststart
        want = min(clip.end_frame / 25, audio_end) - clip.start_frame / 25
        # Audio spans its clip to within two AAC frames (1024 samples each at 44.1 kHz): no
        # audio of the neighbouring clip slips in (the segmenter alone would move ~80 ms).
        assert abs(audio_seconds(clip.path) - want) < 2 * 1024 / 44100 + 1e-3


def test_encode_window_single_piece_and_planning(media: Path, tmp_path: Path) -> None:
    src = _source("long_gop_250", media)
    pk = read_packets(src)
    made = encode_window(
        src,
        pk,
        [Piece(70, 150, "one.mp4")],
        tmp_path,
        has_audio=True,
        frame_dur=pk.time(1) - pk.time(0),
        crf=23,
        preset="ultrafast",
        threads=1,
        tag="w",
    )
    assert made == [tmp_path / "one.mp4"] and count_frames(made[0]) == 80
    pieces = [Piece(0, 10, "a"), Piece(10, 30, "b"), Piece(40, 50, "c"), Piece(50, 90, "d")]
    assert [[p.name for p in w] for w in plan_runs(pieces, 1, 10_000)] == [["a", "b"], ["c", "d"]]
    # Long runs are cut at clip boundaries for parallel encoders, never inside a clip.
    halves = [Piece(0, 10, "a"), Piece(10, 20, "b")]
    assert [[p.name for p in w] for w in plan_runs(halves, 2, 10_000)] == [["a"], ["b"]]


def _tile_diffs(a: Path, b: Path, meta: dict[str, Any]) -> list[float]:
    import cv2

    ia, ib = cv2.imread(str(a)).astype(float), cv2.imread(str(b)).astype(float)
    assert ia.shape == ib.shape
    th, tw = meta["tile_height"], meta["tile_width"]
    return [
        float(
            np.abs(
                ia[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
                - ib[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
            ).mean()
        )
        for r in range(meta["rows"])
        for c in range(meta["cols"])
    ]


@pytest.mark.parametrize("kind", ["long_gop_250", "open_gop_bframes"])
def test_artifacts_from_source_match_per_clip_functions(
    kind: str, media: Path, tmp_path: Path
) -> None:
    """Same keyframe indices, same sprite plan and tiles as decoding each clip file, including
    a 1-frame clip, a clip with a gap before it and one whose sprite rate is lowered."""
    src = _source(kind, media)
    pairs = [(0, 1), (1, 70), (75, 150), (150, 300)]
    split = split_video(src, pairs, tmp_path / "clips", allow_copy=False)
    ranges = [ClipRange(c.index, c.start_frame, c.end_frame, f"c{c.index}") for c in split.clips]
    sprite = SpriteConsumer(tile_width=64, max_height=200)  # 300-frame clip: fewer fps
    result = make_clip_artifacts(
        src,
        ranges,
        tmp_path / "art",
        keyframes=KeyframeConsumer("multi"),
        sprite=sprite,
        workers=2,
        max_clips_per_window=2,
    )
    assert result.windows == 2 and not result.failed
    for clip, art in zip(split.clips, result.clips, strict=True):
        old_kf = extract_keyframes(clip.path, "multi", tmp_path / "old" / f"{clip.index}")
        assert art.keyframes is not None and art.sprite is not None
        assert [k.frame_index for k in art.keyframes.keyframes] == [
            k.frame_index for k in old_kf.keyframes
        ]
        assert [Path(k.path).name for k in art.keyframes.keyframes] == [
            f"c{clip.index}_multi_{p}.jpg" for p in (25, 50, 75)
        ]
        old_sp = make_sprite(
            clip.path, tmp_path / "old" / f"{clip.index}.jpg", tile_width=64, max_height=200
        )
        skip = {"path", "json_path", "clip"}
        assert {k: v for k, v in art.sprite.to_dict().items() if k not in skip} == {
            k: v for k, v in old_sp.to_dict().items() if k not in skip
        }
        meta = json.loads(Path(art.sprite.json_path).read_text())
        assert meta["image"] == "sprite.jpg" and meta["frame_count"] == old_sp.frame_count
        # Tiles show the same frames (the clip file is a re-encode: a few levels apart at most;
        # a neighbouring frame of this moving footage, or a padded tile, is far more).
        assert max(_tile_diffs(Path(old_sp.path), Path(art.sprite.path), meta)) < 6
    assert result.processes == result.windows  # one decode per window, no retries


def test_artifact_windows_and_bad_requests(media: Path, tmp_path: Path) -> None:
    src = _source("long_gop_250", media)
    pk = read_packets(src)
    clips = [ClipRange(k, a, b, f"c{k}") for k, (a, b) in enumerate(CUTS)]
    windows = plan_windows(clips, pk, 2, 48)
    assert [[c.name for c in w.clips] for w in windows] == [["c0", "c1"], ["c2", "c3"]]
    # A window decodes from the key frame at or before its first clip (key frames: 0, 250).
    assert windows[1].first == 0 and windows[1].seek is None
    assert len(plan_windows(clips, pk, 4, 1)) == 4  # at most one clip per window
    (late,) = plan_windows([ClipRange(0, 260, 300, "late")], pk, 1, 48)
    assert late.first == 250 and late.seek is not None
    with pytest.raises(InvalidInputError):
        make_clip_artifacts(src, clips, tmp_path)  # no consumer
    with pytest.raises(InvalidInputError):
        make_clip_artifacts(src, [ClipRange(0, 0, 301, "x")], tmp_path, sprite=SpriteConsumer())
    with pytest.raises(InvalidInputError):
        make_clip_artifacts(
            src,
            [ClipRange(0, 0, 5, "x"), ClipRange(1, 5, 9, "x")],
            tmp_path,
            sprite=SpriteConsumer(),
        )
    with pytest.raises(InvalidInputError):
        KeyframeConsumer("nope")


def test_seeked_window_frames_are_the_right_frames(media: Path, tmp_path: Path) -> None:
    """A window decoded from a key frame inside the video still maps frame n to source frame
    first + n: the keyframe of a clip after the seek is the source frame it claims to be."""
    src = _source("long_gop_250", media)
    clip = ClipRange(0, 260, 300, "late")
    result = make_clip_artifacts(src, [clip], tmp_path, keyframes=KeyframeConsumer("midpoint"))
    assert result.clips[0].keyframes is not None
    kf = result.clips[0].keyframes.keyframes[0]
    assert kf.frame_index == 20
    import cv2

    got = cv2.imread(kf.path).astype(float)
    diffs = {}
    for n in (279, 280, 281):
        png = tmp_path / f"frame{n}.png"
        _ffmpeg("-i", str(src), "-vf", f"select=eq(n\\,{n})", "-frames:v", "1", str(png))
        diffs[n] = float(np.abs(got - cv2.imread(str(png)).astype(float)).mean())
    # The JPEG is source frame 280, not a neighbour (JPEG noise keeps it a few levels off).
    assert diffs[280] < 6 and diffs[280] < min(diffs[279], diffs[281]), diffs


def chromium_or_skip() -> tuple[Any, str]:
    """Playwright's sync API and Debian's chromium, or skip the test (checked before any work)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium_path = os.environ.get("HEATERS_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium_path).exists():
        pytest.skip("no chromium")
    return sync_api, chromium_path


def assert_play_in_chromium(
    chromium: tuple[Any, str], videos: list[tuple[Path, int]], fps: float, tmp_path: Path
) -> None:
    """Each (file, frames) plays in chromium: readyState 4 and a duration of frames / fps."""
    sync_api, chromium_path = chromium
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            page = browser.new_page()
            for k, (path, frames) in enumerate(videos):
                html = tmp_path / f"play{k}.html"
                html.write_text(
                    f'<video id="v" src="{path.as_uri()}" preload="auto" muted></video>'
                )
                page.goto(html.as_uri())
                page.wait_for_function(
                    "document.getElementById('v').readyState === 4", timeout=20000
                )
                duration = page.evaluate("document.getElementById('v').duration")
                assert abs(duration - frames / fps) < 0.1, (path, duration)
        finally:
            browser.close()


def test_new_cutter_clips_play_in_chromium(media: Path, tmp_path: Path) -> None:
    """Clips from the one-pass encoder play in Debian's chromium: readyState 4, right duration."""
    chromium = chromium_or_skip()
    src = _source("open_gop_bframes", media)
    result = split_video(src, CUTS, tmp_path / "clips", allow_copy=False)
    videos = [(Path(c.path), c.frame_count) for c in result.clips]
    assert_play_in_chromium(chromium, videos, 25, tmp_path)


@pytest.mark.parametrize(
    ("frames", "fps", "rate"),
    [
        (71, "25", "24"),
        (30, "30000/1001", "24"),
        (50, "25", "7/3"),
        (7, "60", "24"),
        (1, "25", "25"),
        (3, "25", "25/3"),
        (1500, "25", "24"),
    ],
)
def test_sprite_frames_are_what_the_fps_filter_picks(
    frames: int, fps: str, rate: str, tmp_path: Path
) -> None:
    """The tiles' frame numbers, computed, equal ffmpeg's own ``fps`` filter on a clip whose
    frame i carries the grey level 3i mod 256 (rounding rule, lowered rates, NTSC rates), and
    the ``select`` expression the engine uses picks exactly those frames, also for a clip of
    1,440 tiles (a list of ``eq`` terms breaks ffmpeg's parser past ~100)."""
    from fractions import Fraction

    from heaters_media.sprite import (
        fps_filter_frames,
        sprite_frame_indices,
        sprite_select_expr,
    )

    clip = tmp_path / "numbered.mkv"
    lavfi = f"color=black:s=16x16:r={fps},format=gray,geq=lum='mod(N*3\\,256)'"
    _ffmpeg("-f", "lavfi", "-i", lavfi, "-frames:v", str(frames), "-c:v", "ffv1", str(clip))
    r = Fraction(rate)

    def levels(graph: str) -> list[int]:
        args = ["-vf", graph, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray"]
        raw = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(clip), *args, "-"], capture_output=True, check=True
        ).stdout
        return [int(v) for v in np.frombuffer(raw, np.uint8).reshape(-1, 256)[:, 0]]

    n = fps_filter_frames(frames, Fraction(fps), r)
    want = [3 * i % 256 for i in sprite_frame_indices(frames, Fraction(fps), r)]
    assert len(want) == n
    assert levels(f"fps={r.numerator}/{r.denominator}")[:n] == want
    assert levels(f"select={sprite_select_expr(frames, Fraction(fps), r)}") == want


def test_windows_close_at_the_memory_budget() -> None:
    clips = [ClipRange(k, 10 * k, 10 * k + 10, f"c{k}") for k in range(6)]
    windows = plan_windows(clips, None, 1, 48, cost=lambda c: 100, budget=250)
    assert [len(w.clips) for w in windows] == [2, 2, 2]
    assert all(w.first == 0 and w.seek is None for w in windows)  # no packets: no seeking


def test_keyframe_precision_is_pure_copy_with_the_snap_reported(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_video(media / "gop60.mp4", SCENES, gop=60)  # key frames 0, 60, 120, 180, 240
    monkeypatch.setattr(split_module, "encode_window", None)  # nothing may be re-encoded
    result = split_video(src, CUTS, tmp_path / "clips", precision="keyframe")
    assert [c.method for c in result.clips] == ["copy"] * 4
    assert [(c.start_frame, c.end_frame) for c in result.clips] == [
        (0, 70),
        (60, 150),
        (120, 220),
        (180, 300),
    ]
    assert [c.snapped_from for c in result.clips] == [None, 70, 150, 220]
    for clip in result.clips:
        assert count_frames(clip.path) == clip.frame_count == clip.end_frame - clip.start_frame
        assert_same_frame(Path(clip.path), 0, src, clip.start_frame, 300)
    monkeypatch.undo()
    exact = split_video(src, CUTS, tmp_path / "exact")
    assert all(c.snapped_from is None for c in exact.clips)
    with pytest.raises(InvalidInputError, match="precision"):
        split_video(src, CUTS, tmp_path / "bad", precision="nearest")  # type: ignore[arg-type]


def test_keyframe_precision_refuses_a_source_it_cannot_copy(media: Path, tmp_path: Path) -> None:
    src = media / "mpeg4.mp4"
    _ffmpeg("-i", str(_source("long_gop_250", media)), "-c:v", "mpeg4", "-c:a", "copy", str(src))
    with pytest.raises(InvalidInputError, match="stream-copied"):
        split_video(src, CUTS, tmp_path / "clips", precision="keyframe")
    assert not (tmp_path / "clips").exists() or not any((tmp_path / "clips").iterdir())


def test_segment_list_check_catches_a_missed_or_moved_cut(tmp_path: Path) -> None:
    from fractions import Fraction

    from heaters_media.encode_pass import _check_segments
    from heaters_media.errors import ToolFailedError

    listing = tmp_path / "w.csv"
    starts = [Fraction(0), Fraction(70, 25), Fraction(150, 25)]
    dur = Fraction(1, 25)
    listing.write_text("w_0.mp4,0.000000,2.800000\nw_1.mp4,2.800000,6.000000\nw_2.mp4,6.0,8.8\n")
    _check_segments(listing, starts, dur, "ok")
    listing.write_text("w_0.mp4,0.000000,6.000000\nw_1.mp4,6.000000,8.800000\n")  # missed
    with pytest.raises(ToolFailedError):
        _check_segments(listing, starts, dur, "missed")
    listing.write_text("w_0.mp4,0.0,2.76\nw_1.mp4,2.76,5.96\nw_2.mp4,5.96,8.8\n")  # 1 frame early
    with pytest.raises(ToolFailedError):
        _check_segments(listing, starts, dur, "moved")


def test_a_keyframe_missing_anywhere_fails_the_whole_window(media: Path, tmp_path: Path) -> None:
    """Keyframe files are numbered in the order ffmpeg wrote them: one lost in the middle
    would shift every later clip onto its neighbour's frame, so the window fails as a whole."""
    src = _source("short_gop", media)
    info = probe_video(src)
    source = Source(src, info, Fraction(info.fps_fraction))
    consumer = KeyframeConsumer("midpoint")
    clips = [ClipRange(0, 0, 70, "a"), ClipRange(1, 70, 150, "b")]
    folder = tmp_path / "window"
    folder.mkdir()
    consumer.window_branch(source, 0, clips, folder, "v0")
    assert json.loads((folder / "frames.json").read_text()) == [35, 110]
    (folder / "kf_1.jpg").write_bytes(b"\xff\xd8")  # clip b's file; clip a's is missing
    for clip in clips:  # b's own file is there, but it may be a's frame: both refused
        with pytest.raises(CorruptMediaError, match=r"frame\(s\) \[35\]"):
            consumer.collect(source, clip, folder, tmp_path)
