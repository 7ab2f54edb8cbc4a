"""Ingest and normalize with real ffmpeg and real yt-dlp.

URLs are served by a local ``http.server`` on 127.0.0.1 and fetched through yt-dlp's generic
extractor, so the download path is the real one without the internet. Every input variant is a
tiny generated video (320x180, about a second) so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from heaters_media.errors import (
    CorruptMediaError,
    DownloadFailedError,
    InvalidInputError,
    MediaError,
    UnsupportedMediaError,
)
from heaters_media.ingest import ingest
from heaters_media.normalize import needs_normalization, normalize
from heaters_media.probe import probe
from tests.media_factory import count_frames, make_video

BBB = Path(__file__).resolve().parents[1] / "data" / "bbb_720p_5s.mp4"
FRAMES = [15, 15]  # two scenes, 30 frames at 25 fps


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _video_md5(path: Path) -> str:
    """MD5 of the video packets' payload: equal only when the video was not re-encoded."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:V:0", "-c", "copy", "-f", "md5", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding every input variant (also the HTTP server's root)."""
    d = tmp_path_factory.mktemp("media")
    ok = make_video(d / "ok.mp4", FRAMES)
    shutil.copy(BBB, d / "bbb.mp4")
    _ffmpeg("-i", str(ok), "-c", "copy", str(d / "h264.mkv"))
    _ffmpeg(
        "-i",
        str(ok),
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "300k",
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
        str(d / "vp9.webm"),
    )
    _ffmpeg("-i", str(ok), "-c:v", "mpeg4", "-q:v", "5", "-c:a", "copy", str(d / "mpeg4.mp4"))
    _ffmpeg(
        "-i",
        str(ok),
        "-vf",
        "setpts='if(lt(N,15),N/25,0.6+(N-15)/10)/TB'",
        "-fps_mode",
        "vfr",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        str(d / "vfr.mp4"),
    )
    _ffmpeg(
        "-i",
        str(ok),
        "-c:v",
        "copy",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "64k",
        "-movflags",
        "+faststart",
        str(d / "mp3.mp4"),
    )
    _ffmpeg("-i", str(ok), "-c:v", "copy", "-c:a", "libopus", "-b:a", "48k", str(d / "opus.mkv"))
    # A DASH manifest with two video heights and a separate audio track: yt-dlp picks a
    # format by height and merges video + audio with ffmpeg.
    (d / "dash").mkdir()
    _ffmpeg(
        "-i",
        str(ok),
        "-map",
        "0:v",
        "-map",
        "0:v",
        "-map",
        "0:a",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-s:v:1",
        "160x90",
        "-c:a",
        "copy",
        "-seg_duration",
        "1",
        "-adaptation_sets",
        "id=0,streams=v id=1,streams=a",
        "-f",
        "dash",
        str(d / "dash" / "manifest.mpd"),
    )
    # Bad inputs.
    (d / "empty.mp4").write_bytes(b"")
    (d / "random.mp4").write_bytes(bytes(range(256)) * 40 + b"\x00\xff" * 1000)
    (d / "notes.txt").write_text("just some text, not a video\n" * 40)
    _ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(d / "audio.m4a")
    )
    bbb = BBB.read_bytes()
    (d / "trunc_moov_at_end.mp4").write_bytes(bbb[: len(bbb) // 2])
    data = ok.read_bytes()
    (d / "trunc_faststart.mp4").write_bytes(data[: len(data) // 2])
    return d


@pytest.fixture(scope="module")
def http_base(media: Path) -> Iterator[str]:
    """Serve ``media`` over HTTP on 127.0.0.1 (a free port) in a background thread."""

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(media)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


# --- URLs ---------------------------------------------------------------------------------------


def test_url_download_through_ytdlp(http_base: str, media: Path, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    res = ingest(f"{http_base}/ok.mp4", tmp_path, progress=lambda f, m: calls.append((f, m)))
    assert res.source_type == "url"
    assert res.extractor == "generic"
    assert res.webpage_url == f"{http_base}/ok.mp4"
    assert res.title == "ok"
    assert res.normalize_action == "none" and not res.normalized
    assert res.normalized_path == res.original_path == str(tmp_path / "original.mp4")
    assert _files(tmp_path) == ["original.mp4"]
    assert (tmp_path / "original.mp4").read_bytes() == (media / "ok.mp4").read_bytes()
    assert res.probe["frame_count"] == 30 and res.duration == pytest.approx(1.2, abs=0.05)
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m == "downloading" for _, m in calls)


def test_url_download_is_byte_identical_and_normalized(
    http_base: str, media: Path, tmp_path: Path
) -> None:
    res = ingest(f"{http_base}/vp9.webm", tmp_path)
    assert (tmp_path / "original.webm").read_bytes() == (media / "vp9.webm").read_bytes()
    assert res.normalize_action == "transcode"
    assert res.normalized_path == str(tmp_path / "normalized.mp4")
    assert _files(tmp_path) == ["normalized.mp4", "original.webm"]
    assert res.probe["video_codec"] == "h264" and res.probe["frame_count"] == 30


@pytest.mark.parametrize("max_height,size", [(1080, (320, 180)), (100, (160, 90))])
def test_url_dash_merges_video_and_audio_up_to_max_height(
    http_base: str, tmp_path: Path, max_height: int, size: tuple[int, int]
) -> None:
    calls: list[float] = []
    res = ingest(
        f"{http_base}/dash/manifest.mpd",
        tmp_path,
        max_height=max_height,
        progress=lambda f, m: calls.append(f),
    )
    assert (res.probe["width"], res.probe["height"]) == size
    assert res.probe["audio_codec"] == "aac" and res.probe["frame_count"] == 30
    assert _files(tmp_path) == ["original.mp4"]
    assert calls == sorted(calls) and calls[-1] == 1.0


def test_url_404_is_download_failed(http_base: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadFailedError, match="404"):
        ingest(f"{http_base}/missing.mp4", tmp_path)
    assert _files(tmp_path) == []


def test_url_to_corrupt_file_leaves_nothing(http_base: str, tmp_path: Path) -> None:
    with pytest.raises(CorruptMediaError):
        ingest(f"{http_base}/trunc_faststart.mp4", tmp_path)
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    "source",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/video.mp4",
        "not a url",
        "rtmp://example.com/live",
        "http:///no-host.mp4",
        "",
        "   ",
        "http://[::1",
        "http://[not-an-ip]/v.mp4",
        "http://127.0.0.1:99999/v.mp4",
        "http://127.0.0.1:port/v.mp4",
        "https://",
        "http://user@/v.mp4",
        "http://exa mple.com/v.mp4",
        "http://127.0.0.1/v.mp4\r\nX-Injected: 1",
        "clip\x00.mp4",
        "FILE:///etc/passwd",
        "file://localhost/etc/passwd",
        "/dev/null",
        "~no-such-user-here/v.mp4",
        "x" * 5000 + ".mp4",
        "h" * 9000,
    ],
)
def test_rejected_sources(source: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        ingest(source, tmp_path / "out")
    assert info.value.message and info.value.kind == "invalid_input"
    assert _files(tmp_path / "out") == []


def test_malformed_url_message_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"malformed URL 'http://\[::1'.*IPv6"):
        ingest("http://[::1", tmp_path)


def test_folder_as_source_is_invalid_input(media: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="is a folder"):
        ingest(media, tmp_path / "out")
    assert _files(tmp_path / "out") == []


def test_file_url_refused_even_for_existing_file(media: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="only http and https"):
        ingest((media / "ok.mp4").as_uri(), tmp_path)


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="neither"):
        ingest(str(tmp_path / "nope.mp4"), tmp_path / "out")


# --- local files: normalization decisions ---------------------------------------------------------


def test_qualifying_file_is_not_reencoded(media: Path, tmp_path: Path) -> None:
    res = ingest(media / "ok.mp4", tmp_path)
    assert res.source_type == "file" and res.title == "ok"
    assert res.normalize_action == "none" and res.normalize_reasons == []
    assert res.normalized_path == res.original_path
    assert _files(tmp_path) == ["original.mp4"]
    assert (tmp_path / "original.mp4").read_bytes() == (media / "ok.mp4").read_bytes()
    assert res.probe["path"] == str(tmp_path / "original.mp4")


def test_non_faststart_mp4_is_remuxed(media: Path, tmp_path: Path) -> None:
    src = media / "bbb.mp4"
    assert not probe(src).faststart
    res = ingest(src, tmp_path)
    assert res.normalize_action == "remux"
    assert any("faststart" in r for r in res.normalize_reasons)
    out = Path(res.normalized_path)
    assert out == tmp_path / "normalized.mp4"
    p = probe(out)
    assert p.faststart and p.frame_count == probe(src).frame_count == res.probe["frame_count"]
    assert _video_md5(out) == _video_md5(src)  # stream copy, not a re-encode


def test_h264_mkv_is_remuxed(media: Path, tmp_path: Path) -> None:
    res = ingest(media / "h264.mkv", tmp_path)
    assert res.normalize_action == "remux"
    assert _files(tmp_path) == ["normalized.mp4", "original.mkv"]
    out = Path(res.normalized_path)
    assert probe(out).faststart and count_frames(out) == 30
    assert _video_md5(out) == _video_md5(media / "ok.mp4")


@pytest.mark.parametrize("name,codec", [("vp9.webm", "vp9"), ("mpeg4.mp4", "mpeg4")])
def test_other_codecs_are_transcoded(media: Path, tmp_path: Path, name: str, codec: str) -> None:
    src = media / name
    assert probe(src).video_codec == codec
    calls: list[float] = []
    res = ingest(src, tmp_path, progress=lambda f, m: calls.append(f))
    assert res.normalize_action == "transcode"
    assert any(codec in r for r in res.normalize_reasons)
    out = Path(res.normalized_path)
    p = probe(out)
    assert (p.video_codec, p.pix_fmt, p.audio_codec) == ("h264", "yuv420p", "aac")
    assert p.faststart and not p.is_vfr and needs_normalization(p) == []
    assert count_frames(out) == 30
    assert len(calls) >= 3 and calls == sorted(calls) and calls[-1] == 1.0


def test_vfr_is_transcoded_to_cfr(media: Path, tmp_path: Path) -> None:
    src = media / "vfr.mp4"
    assert probe(src).is_vfr
    res = ingest(src, tmp_path)
    assert res.normalize_action == "transcode"
    assert "variable frame rate" in res.normalize_reasons
    p = probe(Path(res.normalized_path))
    assert not p.is_vfr and p.video_codec == "h264"
    # Constant rate at the source's average rate, spanning the source's 2.0 s of frames
    # (ffprobe's own duration of the VFR source, 1.92 s, ignores the last frame's 0.1 s).
    assert p.fps == pytest.approx(probe(src).fps)
    assert p.duration == pytest.approx(2.05, abs=0.1)


@pytest.mark.parametrize("name,codec", [("mp3.mp4", "mp3"), ("opus.mkv", "opus")])
def test_wrong_audio_only_reencodes_audio(
    media: Path, tmp_path: Path, name: str, codec: str
) -> None:
    src = media / name
    assert probe(src).audio_codec == codec
    res = ingest(src, tmp_path)
    assert res.normalize_action == "transcode_audio"
    out = Path(res.normalized_path)
    p = probe(out)
    assert p.audio_codec == "aac" and p.faststart
    assert _video_md5(out) == _video_md5(src)  # video stream copied untouched


def test_force_normalize_transcodes_a_qualifying_file(media: Path, tmp_path: Path) -> None:
    res = ingest(media / "ok.mp4", tmp_path, force_normalize=True)
    assert res.normalize_action == "transcode" and res.normalized
    assert count_frames(Path(res.normalized_path)) == 30


def test_reingest_into_same_folder_drops_stale_files(media: Path, tmp_path: Path) -> None:
    ingest(media / "vp9.webm", tmp_path)
    assert _files(tmp_path) == ["normalized.mp4", "original.webm"]
    ingest(media / "ok.mp4", tmp_path)
    assert _files(tmp_path) == ["original.mp4"]


def test_normalize_direct(media: Path, tmp_path: Path) -> None:
    fine = normalize(media / "ok.mp4", tmp_path / "n.mp4")
    assert fine.action == "none" and fine.path == str(media / "ok.mp4")
    assert not (tmp_path / "n.mp4").exists()
    calls: list[float] = []
    res = normalize(media / "bbb.mp4", tmp_path / "n.mp4", progress=lambda f, m: calls.append(f))
    assert res.action == "remux" and res.path == str(tmp_path / "n.mp4")
    assert res.probe["faststart"] and calls == sorted(calls) and calls[-1] == 1.0
    assert _files(tmp_path) == ["n.mp4"]


def test_rotation_is_baked_in(media: Path, tmp_path: Path) -> None:
    rotated = tmp_path / "rot.mp4"
    _ffmpeg("-i", str(media / "ok.mp4"), "-c", "copy", "-metadata:s:v", "rotate=90", str(rotated))
    assert probe(rotated).rotation == 90
    res = normalize(rotated, tmp_path / "n.mp4")
    assert res.action == "transcode"
    assert (res.probe["rotation"], res.probe["width"], res.probe["height"]) == (0, 180, 320)


# --- bad inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,error",
    [
        ("empty.mp4", CorruptMediaError),
        ("random.mp4", CorruptMediaError),
        ("notes.txt", UnsupportedMediaError),
        ("audio.m4a", UnsupportedMediaError),
        ("trunc_moov_at_end.mp4", CorruptMediaError),
        ("trunc_faststart.mp4", CorruptMediaError),
    ],
)
def test_bad_inputs_raise_typed_errors_and_leave_nothing(
    media: Path, tmp_path: Path, name: str, error: type[MediaError]
) -> None:
    out = tmp_path / "out"
    with pytest.raises(error):
        ingest(media / name, out)
    assert _files(out) == []


# --- CLI ------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heaters_media", "ingest", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_cli_success(media: Path, tmp_path: Path) -> None:
    proc = _cli(str(media / "h264.mkv"), "--out", str(tmp_path), "-q")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "success"
    assert data["normalize_action"] == "remux"
    assert Path(data["normalized_path"]).is_file()


@pytest.mark.parametrize("source", ["http://[::1", "", "."])
def test_cli_malformed_source_is_a_typed_error(source: str, tmp_path: Path) -> None:
    proc = _cli(source, "--out", str(tmp_path), "-q")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["type"] == "invalid_input" and error["message"]
    assert _files(tmp_path) == []


def test_cli_error(media: Path, tmp_path: Path) -> None:
    proc = _cli(str(media / "trunc_faststart.mp4"), "--out", str(tmp_path), "-q")
    assert proc.returncode != 0
    data = json.loads(proc.stdout)
    assert data["status"] == "error" and data["error"]["type"] == "corrupt_media"
    assert _files(tmp_path) == []
