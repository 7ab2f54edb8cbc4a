"""Review proxies from the artifacts' one decode: frame-exact on hostile GOP structures, clips
with gaps between them, never enlarged, playable in chromium, and a wrong file refused."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from heaters_media.artifacts import (
    ClipRange,
    KeyframeConsumer,
    SpriteConsumer,
    make_clip_artifacts,
)
from heaters_media.consumers import Source
from heaters_media.errors import CorruptMediaError, InvalidInputError
from heaters_media.probe import keyframe_indices, probe_video
from heaters_media.proxy import ProxyConsumer, proxy_size
from tests.media.test_engine import (
    KINDS,
    _source,
    assert_play_in_chromium,
    chromium_or_skip,
)
from tests.media.test_split import assert_same_frame
from tests.media_factory import count_frames

# A 1-frame clip, a gap of 5 frames, then clips that do not start on key frames.
PAIRS = [(0, 1), (1, 70), (75, 150), (150, 300)]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.mark.parametrize("kind", KINDS)
def test_proxies_are_frame_exact(kind: str, media: Path, tmp_path: Path) -> None:
    src = _source(kind, media)
    total = probe_video(src).frame_count
    pairs = [(a, min(b, total)) for a, b in PAIRS if a < total]
    ranges = [ClipRange(k, a, b, f"c{k}") for k, (a, b) in enumerate(pairs)]
    # Two windows of two clips: the second seeks (long GOPs) and holds a gap.
    result = make_clip_artifacts(
        src,
        ranges,
        tmp_path / "art",
        keyframes=KeyframeConsumer("multi"),
        proxy=ProxyConsumer(crf=14),
        workers=2,
        max_clips_per_window=2,
    )
    assert not result.failed and result.processes == result.windows == 2
    info = probe_video(src)
    for art, (a, b) in zip(result.clips, pairs, strict=True):
        assert art.proxy is not None and art.keyframes is not None
        path = Path(art.proxy.path)
        assert path == tmp_path / "art" / art.name / "proxy.mp4"
        assert count_frames(path) == b - a == art.proxy.frames
        assert keyframe_indices(path)[0] == 0  # starts on its own key frame
        got = probe_video(path)
        assert got.display_size == proxy_size(info.display_size, 360)
        assert (got.width, got.height) == (art.proxy.width, art.proxy.height)
        if got.display_size == info.display_size:  # same size: compare frames directly
            assert_same_frame(path, 0, src, a, total)
            assert_same_frame(path, b - a - 1, src, b - 1, total)


def test_proxies_leave_keyframes_and_sprites_as_they_were(media: Path, tmp_path: Path) -> None:
    """The proxy is one more branch of the same graph: keyframes and sprites are byte for byte
    what the pass without it makes."""
    src = _source("open_gop_bframes", media)
    ranges = [ClipRange(k, a, b, f"c{k}") for k, (a, b) in enumerate(PAIRS)]
    made = {}
    for with_proxy in (False, True):
        out = tmp_path / str(with_proxy)
        make_clip_artifacts(
            src,
            ranges,
            out,
            keyframes=KeyframeConsumer("multi"),
            sprite=SpriteConsumer(tile_width=64),
            proxy=ProxyConsumer() if with_proxy else None,
            workers=1,
        )
        made[with_proxy] = {
            p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.suffix == ".jpg"
        }
    assert len(made[False]) == 4 * len(PAIRS) and made[False] == made[True]


def test_proxy_size_keeps_the_shape_and_never_enlarges() -> None:
    assert proxy_size((1280, 720), 360) == (640, 360)
    assert proxy_size((1920, 1080), 360) == (640, 360)
    assert proxy_size((202, 114), 360) == (202, 114)
    assert proxy_size((203, 115), 360) == (202, 114)  # both sides even
    assert proxy_size((720, 1280), 360) == (202, 360)  # portrait
    assert proxy_size((853, 480), 360) == (640, 360)  # anamorphic DVD shown at 16:9


def test_bad_proxy_requests(media: Path, tmp_path: Path) -> None:
    src = _source("short_gop", media)
    overlapping = [ClipRange(0, 0, 50, "a"), ClipRange(1, 40, 90, "b")]
    result = make_clip_artifacts(src, overlapping, tmp_path, proxy=ProxyConsumer(), workers=1)
    # Overlapping clips cannot be segments of one encode: the window is refused before ffmpeg
    # starts, and its clips are made one by one, as after any failed window.
    assert not result.failed and result.processes == 3
    for art, clip in zip(result.clips, overlapping, strict=True):
        assert art.proxy is not None and count_frames(art.proxy.path) == clip.frames
    for bad in ({"height": 8}, {"crf": 60}, {"preset": "warp"}, {"keyframe_seconds": 0}):
        with pytest.raises(InvalidInputError):
            ProxyConsumer(**bad)  # type: ignore[arg-type]


def test_a_proxy_with_the_wrong_frames_is_refused(media: Path, tmp_path: Path) -> None:
    """What the segmenter wrote is counted, not trusted: a file one frame short fails its clip."""
    src = _source("short_gop", media)
    info = probe_video(src)
    source = Source(src, info, Fraction(info.fps_fraction))
    clips = [ClipRange(0, 0, 70, "a"), ClipRange(1, 70, 150, "b")]
    made = make_clip_artifacts(src, clips, tmp_path / "ok", proxy=ProxyConsumer(), workers=1)
    folder = tmp_path / "window"
    folder.mkdir()
    (folder / "pieces.json").write_text(json.dumps([[0, 70], [70, 150]]))
    assert made.clips[0].proxy is not None and made.clips[1].proxy is not None
    # Segment 0 holds clip b's 80 frames: the file of a cut the segmenter moved.
    shutil.copyfile(made.clips[1].proxy.path, folder / "seg_000000.mp4")
    shutil.copyfile(made.clips[1].proxy.path, folder / "seg_000001.mp4")
    with pytest.raises(CorruptMediaError, match="holds 80 frames, not 70"):
        ProxyConsumer().collect(source, clips[0], folder, tmp_path / "dest")
    (folder / "seg_000000.mp4").write_bytes(b"")
    with pytest.raises(CorruptMediaError, match="no review proxy"):
        ProxyConsumer().collect(source, clips[0], folder, tmp_path / "dest")
    # One file too few or too many: every file might be its neighbour's, so no clip passes,
    # not even one whose own file looks right.
    (folder / "seg_000000.mp4").unlink()
    with pytest.raises(CorruptMediaError, match="wrote 1 files for 2 pieces"):
        ProxyConsumer().collect(source, clips[1], folder, tmp_path / "dest")
    shutil.copyfile(made.clips[0].proxy.path, folder / "seg_000000.mp4")
    (tmp_path / "dest").mkdir()
    assert ProxyConsumer().collect(source, clips[1], folder, tmp_path / "dest").frames == 80
    (folder / "seg_000002.mp4").write_bytes(b"")
    with pytest.raises(CorruptMediaError, match="wrote 3 files for 2 pieces"):
        ProxyConsumer().collect(source, clips[1], folder, tmp_path / "dest")


def test_proxies_play_in_chromium(media: Path, tmp_path: Path) -> None:
    """Proxies play in Debian's chromium: readyState 4, the clip's duration."""
    chromium = chromium_or_skip()
    src = _source("open_gop_bframes", media)
    ranges = [ClipRange(k, a, b, f"c{k}") for k, (a, b) in enumerate(PAIRS)]
    result = make_clip_artifacts(src, ranges, tmp_path, proxy=ProxyConsumer(), workers=1)
    proxies = [art.proxy for art in result.clips]
    assert all(p is not None for p in proxies)
    videos = [(Path(p.path), p.frames) for p in proxies if p is not None]
    assert_play_in_chromium(chromium, videos, 25, tmp_path)
