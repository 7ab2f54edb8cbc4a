"""Bounded downloads and reclaimed leftovers, against a real hostile HTTP server.

A local ``http.server`` in a thread serves what an attacker (or a broken site) would: an endless
body, a body trickled a few bytes at a time, a ``Content-Length`` far over the limit, headers
and then silence. yt-dlp fetches each for real (its generic extractor takes a ``video/*``
response as a direct media link); the limits are set small here, so every case ends in a
``download_failed`` error naming the limit, and the output folder is left empty.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from heaters_media.download import DownloadLimits
from heaters_media.errors import DownloadFailedError, InvalidInputError
from heaters_media.ingest import ingest
from heaters_media.staging import owner_tag, sweep_stale
from heaters_resources.settings import Settings
from tests.media_factory import make_video

ROOT = Path(__file__).resolve().parents[2]
CHUNK = b"\0" * 65536
STOP = threading.Event()


class HostileHandler(BaseHTTPRequestHandler):
    """Each path is one way to hold a downloader: see the module docstring."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _headers(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _page(self, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers(None)

    def do_GET(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self._serve()

    def _serve(self) -> None:
        if self.path == "/endless.mp4":  # no length, as fast as the socket takes it
            self._headers(None)
            while not STOP.is_set():
                self.wfile.write(CHUNK)
        elif self.path == "/steady.mp4":  # no length, a steady 1.3 MB/s
            self._headers(None)
            while not STOP.is_set():
                self.wfile.write(CHUNK)
                time.sleep(0.05)
        elif self.path == "/trickle.mp4":  # 10 MB announced, 20 bytes a second
            self._headers(10_000_000)
            while not STOP.is_set():
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/declared-huge.mp4":  # 50 GiB announced
            self._headers(50 * 1024**3)
            self.wfile.write(CHUNK)
        elif self.path == "/endless.html":  # a page without end (yt-dlp reads pages whole)
            self._page()
            while not STOP.is_set():
                self.wfile.write(b"<p>" + b"x" * 65536 + b"</p>")
        elif self.path == "/trickle.html":  # a page, 20 bytes a second
            self._page()
            while not STOP.is_set():
                self.wfile.write(b"<")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/small.html":  # an ordinary page with no video on it
            body = b"<html><head><title>nothing</title></head><body>no video</body></html>"
            self._page(len(body))
            self.wfile.write(body)
        elif self.path == "/silent.mp4":  # headers, then nothing
            self._headers(10_000_000)
            self.wfile.flush()
            STOP.wait(30)
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    STOP.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        STOP.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _everything(d: Path) -> list[str]:
    """Every file and folder below ``d`` (hidden staging folders and partial files included)."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []


def _limit_failure(url: str, out: Path, limits: DownloadLimits) -> DownloadFailedError:
    with pytest.raises(DownloadFailedError) as info:
        ingest(url, out, limits=limits)
    assert _everything(out) == []
    return info.value


def test_endless_body_stops_at_max_bytes(hostile: str, tmp_path: Path) -> None:
    err = _limit_failure(f"{hostile}/endless.mp4", tmp_path, DownloadLimits(max_bytes=1_000_000))
    assert err.kind == "download_failed" and err.details["limit"] == "max_bytes"
    assert "1000000 byte limit" in err.message


def test_declared_length_over_the_limit_is_refused(hostile: str, tmp_path: Path) -> None:
    err = _limit_failure(
        f"{hostile}/declared-huge.mp4", tmp_path, DownloadLimits(max_bytes=1_000_000)
    )
    assert err.details["limit"] == "max_bytes"
    assert str(50 * 1024**3) in err.message  # the size the server announced


def test_trickled_body_is_a_stall(hostile: str, tmp_path: Path) -> None:
    err = _limit_failure(
        f"{hostile}/trickle.mp4", tmp_path, DownloadLimits(stall_seconds=0.5, stall_min_bytes=1024)
    )
    assert err.details["limit"] == "stall" and "stalled" in err.message


def test_steady_endless_body_hits_the_deadline(hostile: str, tmp_path: Path) -> None:
    limits = DownloadLimits(timeout_seconds=1.0, stall_seconds=30.0)
    err = _limit_failure(f"{hostile}/steady.mp4", tmp_path, limits)
    assert err.details["limit"] == "timeout" and "deadline" in err.message


def test_silent_server_times_out(hostile: str, tmp_path: Path) -> None:
    err = _limit_failure(f"{hostile}/silent.mp4", tmp_path, DownloadLimits(stall_seconds=0.3))
    assert err.details["limit"] == "stall" and "timed out" in err.message.lower()


def test_endless_page_is_refused_before_yt_dlp_reads_it_whole(hostile: str, tmp_path: Path) -> None:
    """yt-dlp's generic extractor reads a page into memory before any hook runs: the page guard
    stops an endless one at PAGE_LIMIT, whatever the (much larger) download limit."""
    err = _limit_failure(f"{hostile}/endless.html", tmp_path, DownloadLimits())
    assert err.details["limit"] == "max_bytes" and "endless page" in err.message


def test_trickled_page_is_a_stall(hostile: str, tmp_path: Path) -> None:
    limits = DownloadLimits(stall_seconds=0.5, stall_min_bytes=1024)
    err = _limit_failure(f"{hostile}/trickle.html", tmp_path, limits)
    assert err.details["limit"] == "stall" and "bytes in 0.5 s" in err.message


def test_an_ordinary_page_without_video_is_yt_dlps_to_judge(hostile: str, tmp_path: Path) -> None:
    err = _limit_failure(f"{hostile}/small.html", tmp_path, DownloadLimits())
    assert err.kind == "download_failed" and "limit" not in err.details
    assert "Unsupported URL" in err.message


def test_real_video_within_limits_downloads_and_one_byte_less_is_refused(
    tmp_path: Path,
) -> None:
    """The limit is exact: a file of N bytes passes max_bytes=N and fails at N - 1 (the
    server declares its length, so yt-dlp refuses before writing)."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    served = tmp_path / "served"
    served.mkdir()
    video = make_video(served / "v.mp4", [10])
    size = video.stat().st_size
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v.mp4"
        ok = ingest(url, tmp_path / "ok", limits=DownloadLimits(max_bytes=size))
        assert Path(ok.original_path).read_bytes() == video.read_bytes()
        err = _limit_failure(url, tmp_path / "no", DownloadLimits(max_bytes=size - 1))
        assert err.details["limit"] == "max_bytes"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_live_stream_is_refused_before_downloading(
    hostile: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live site (mocked: the one remote yt-dlp site here) reports ``is_live``; its media
    URL would be an endless body. Nothing is fetched from it, and the reason says why."""
    from yt_dlp.extractor.generic import GenericIE

    fetched: list[str] = []

    def live(self: object, url: str) -> dict[str, object]:
        fetched.append(url)
        return {"id": "live", "title": "live", "url": f"{hostile}/endless.mp4", "ext": "mp4",
                "is_live": True}  # fmt: skip

    monkeypatch.setattr(GenericIE, "_real_extract", live)
    with pytest.raises(DownloadFailedError, match="live stream") as info:
        # (Small limits: were it downloaded, it would fail on size, not hang the test.)
        ingest("http://live.example/stream", tmp_path, limits=DownloadLimits(max_bytes=10**6))
    assert fetched == ["http://live.example/stream"]  # the extractor ran; the download did not
    assert "limit" not in info.value.details
    assert _everything(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_bytes": 0},
        {"timeout_seconds": 0},
        {"stall_seconds": -1},
        {"timeout_seconds": float("nan")},
        {"stall_seconds": float("inf")},
    ],
)
def test_meaningless_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        DownloadLimits(**kwargs)  # type: ignore[arg-type]


def test_settings_read_the_limits() -> None:
    env = {
        "HEATERS_HOME": "/tmp/h",
        "HEATERS_MAX_DOWNLOAD_BYTES": "1048576",
        "HEATERS_DOWNLOAD_TIMEOUT_SECONDS": "30",
        "HEATERS_DOWNLOAD_STALL_SECONDS": "5",
    }
    s = Settings.from_env(env)
    assert (s.max_download_bytes, s.download_timeout_seconds, s.download_stall_seconds) == (
        1048576,
        30.0,
        5.0,
    )
    assert s.download_limits() == DownloadLimits(
        max_bytes=1048576, timeout_seconds=30.0, stall_seconds=5.0
    )
    d = Settings.from_env({"HEATERS_HOME": "/tmp/h"})
    assert (d.max_download_bytes, d.download_timeout_seconds, d.download_stall_seconds) == (
        20 * 1024**3,
        7200.0,
        60.0,
    )
    for name, bad in [
        ("HEATERS_MAX_DOWNLOAD_BYTES", "20G"),
        ("HEATERS_MAX_DOWNLOAD_BYTES", "0"),
        ("HEATERS_MAX_DOWNLOAD_BYTES", "²"),
        ("HEATERS_DOWNLOAD_TIMEOUT_SECONDS", "0"),
        ("HEATERS_DOWNLOAD_STALL_SECONDS", "nan"),
    ]:
        with pytest.raises(ValueError, match=name):
            Settings.from_env({"HEATERS_HOME": "/tmp/h", name: bad})


# --- leftovers of killed runs ---------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sweep_removes_only_folders_whose_owner_is_gone(tmp_path: Path) -> None:
    host, pid, start = owner_tag().rsplit("-", 2)
    dead = tmp_path / f".staging-{host}-{_dead_pid()}-{start}-abc"
    recycled = tmp_path / f".staging-{host}-{pid}-{int(start) + 1}-abc"  # our pid, other start
    mine = tmp_path / f".staging-{owner_tag()}-abc"
    foreign = tmp_path / ".staging-otherhost-1-1-abc"
    fresh_unowned = tmp_path / ".staging-abc12345"
    old_unowned = tmp_path / ".staging-def67890"
    for d in (dead, recycled, mine, foreign, fresh_unowned, old_unowned):
        (d / "download").mkdir(parents=True)
        (d / "download" / "original.mp4.part").write_bytes(b"x" * 1000)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_unowned, (two_days_ago, two_days_ago))
    removed = sweep_stale(tmp_path)
    assert sorted(removed) == sorted([dead, recycled, old_unowned])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (mine, foreign, fresh_unowned)
    )


def test_kill_9_mid_download_is_reclaimed_by_the_next_ingest(hostile: str, tmp_path: Path) -> None:
    """A real ingest process killed while its download trickles in leaves its staging folder
    and partial file; the next ingest into the same folder removes them."""
    out = tmp_path / "out"
    code = "import sys; from heaters_media.ingest import ingest; ingest(sys.argv[1], sys.argv[2])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, f"{hostile}/trickle.mp4", str(out)], cwd=ROOT
    )
    try:
        for _ in range(300):  # until the partial file exists (at most ~30 s)
            if list(out.glob(".staging-*/download/*.part")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the download ended before it could be killed"
        assert list(out.glob(".staging-*/download/*.part"))
    finally:
        proc.kill()
        proc.wait()
    left = list(out.glob(".staging-*"))
    assert len(left) == 1 and f"-{proc.pid}-" in left[0].name
    video = make_video(tmp_path / "local.mp4", [10])
    ingest(video, out)
    assert _everything(out) == ["original.mp4"]


def test_out_dir_that_is_a_file_is_invalid_input(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", [5])
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        ingest(video, blocker)
