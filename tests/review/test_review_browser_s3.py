"""The review page on an S3 object store, in a real Chromium.

With the local store the app streams media itself (`FileResponse`, tested by
`test_review_browser.py`); with S3 it answers every media URL with a redirect to a short-lived
presigned URL (`heaters_resources/review/media.py`), so the browser fetches clip bytes, keyframes
and sprite sheets from the bucket directly. That path only works if a browser really follows the
cross-origin redirect, plays the video from the signed URL (range requests included) and renders
the images, which no unit test shows: this module drives Debian's `chromium` (Playwright's Python
package with `executable_path`) against the app served by uvicorn in a thread, backed by moto's S3
server over HTTP, on clips made by the real steps from the sample video.

The page loads media without a `crossorigin` attribute, i.e. as no-cors requests: the bucket
needs no CORS rule for the review page, and the test checks that this is what Chromium sends
(moto's server answers CORS headers on everything, so it could not show a missing rule anyway).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from heaters_media.samples import SAMPLE_VIDEO
from heaters_resources import states, steps
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact
from heaters_resources.review import create_app
from heaters_resources.review.media import PRESIGN_SECONDS
from heaters_resources.store.objects import S3ObjectStore
from tests.review.browser_wait import csp_violations, wait_for_js

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("HEATERS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
REVIEWED = 2  # clips taken through keyframes and sprites (the rest stay `spliced`)
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """uvicorn in a daemon thread on a free 127.0.0.1 port; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request, redirects not followed: (status, lower-cased headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_until(page: Any, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a Python-side condition while Playwright keeps delivering the page's events."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


@pytest.fixture
def s3_clips(db: Database, s3_store: S3ObjectStore) -> list[int]:
    """The sample video ingested and spliced into the bucket; the first clips get keyframes and
    a sprite sheet (-> pending_review). Returns every clip id in order."""
    vid = states.create_source_video(db, str(SAMPLE_VIDEO), title="Big Buck Bunny (edit)")
    steps.ingest_source_video(db, s3_store, vid)
    spliced = steps.splice_source_video(db, s3_store, vid)
    reviewed = spliced.identifiers[:REVIEWED]
    assert not steps.keyframe_clips(db, s3_store, reviewed).failed
    assert not steps.sprite_clips(db, s3_store, reviewed).failed
    return spliced.clip_ids


def artifacts_of(db: Database, clip_id: int) -> list[ClipArtifact]:
    with db.session() as s:
        rows = list(
            s.scalars(
                select(ClipArtifact)
                .where(ClipArtifact.clip_id == clip_id)
                .order_by(ClipArtifact.id)
            )
        )
        s.expunge_all()
    return rows


def assert_presigned(url: str, store: S3ObjectStore, endpoint: str, key: str) -> dict[str, str]:
    """`url` is a SigV4 presigned GET of `key` (under the store's prefix) on the moto endpoint;
    returns its query parameters."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == endpoint
    assert parts.path == f"/{store.bucket}/{store.prefix}{key}"  # path-style, prefixed key
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert len(query["X-Amz-Signature"]) == 64
    assert query["X-Amz-Credential"].startswith("testing/")
    assert query["X-Amz-Expires"] == str(PRESIGN_SECONDS)
    return query


def test_media_redirects_to_presigned_s3_urls(
    db: Database, s3_store: S3ObjectStore, s3_endpoint: str, s3_clips: list[int]
) -> None:
    clip = states.get_clip(db, s3_clips[0])
    assert clip.storage_key
    sprite = next(a for a in artifacts_of(db, clip.id) if a.kind == "sprite_sheet")
    with db.session() as s:
        top_artifact = int(s.scalar(select(func.max(ClipArtifact.id))) or 0)
        top_clip = int(s.scalar(select(func.max(Clip.id))) or 0)
    with serve(create_app(db, s3_store)) as base:
        # The clip: a temporary redirect (307 keeps the method) to a presigned URL that expires.
        status, headers, body = get(f"{base}/media/clip/{clip.id}", {"Range": "bytes=0-99"})
        assert status == 307 and body == b""
        assert headers["cache-control"] == "no-store"  # a cached redirect would outlive the URL
        query = assert_presigned(headers["location"], s3_store, s3_endpoint, clip.storage_key)
        signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60
        # ... which S3 honours, ranges included, with the clip's bytes.
        status, s3_headers, part = get(headers["location"], {"Range": "bytes=0-99"})
        assert status == 206, part[:300]
        size = int(s3_headers["content-range"].split("/")[1])
        assert part == s3_store.read_bytes(clip.storage_key)[:100] and size > 100
        # HEAD (what some players send first) redirects the same way.
        status, headers, _ = get(f"{base}/media/clip/{clip.id}", method="HEAD")
        assert status == 307
        assert_presigned(headers["location"], s3_store, s3_endpoint, clip.storage_key)

        # An artifact (the sprite sheet) likewise.
        status, headers, _ = get(f"{base}/media/artifact/{sprite.id}")
        assert status == 307
        location = headers["location"]
        assert_presigned(location, s3_store, s3_endpoint, sprite.storage_key)
        status, s3_headers, jpeg = get(location)
        assert status == 200 and jpeg[:3] == b"\xff\xd8\xff"

        # Ids that name no object, and keys in place of ids: 404 from the app, no redirect.
        for path in (
            f"/media/artifact/{top_artifact + 1}",
            f"/media/clip/{top_clip + 1}",
            "/media/artifact/0",
            f"/media/artifact/{sprite.storage_key}",
            f"/media/artifact/{s3_store.prefix}{sprite.storage_key}",
            f"/media/clip/{clip.storage_key}",
            "/media/artifact/..%2F..%2Fsource_videos%2F1%2Foriginal.mp4",
        ):
            status, headers, _ = get(base + path)
            assert status == 404, path
            assert "location" not in headers, path


def test_review_page_plays_s3_media_in_chromium(
    browser: Any,
    db: Database,
    s3_store: S3ObjectStore,
    s3_endpoint: str,
    s3_clips: list[int],
) -> None:
    clip = states.get_clip(db, s3_clips[0])
    assert clip.storage_key and clip.state == "pending_review"
    artifacts = artifacts_of(db, clip.id)
    sprite = next(a for a in artifacts if a.kind == "sprite_sheet")
    keyframes = [a for a in artifacts if a.kind == "keyframe"]
    assert sprite.sidecar_key and keyframes
    sidecar = json.loads(s3_store.read_bytes(sprite.sidecar_key))
    assert (sidecar["cols"], sidecar["tile_width"]) == (
        sprite.meta["cols"],
        sprite.meta["tile_width"],
    )
    s3_responses: list[Any] = []
    with serve(create_app(db, s3_store)) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        blocked = csp_violations(page)
        page.on(
            "response", lambda r: s3_responses.append(r) if r.url.startswith(s3_endpoint) else None
        )
        page.goto(f"{base}/?clip={clip.id}")
        assert page.text_content("#identifier") == clip.identifier

        # The <video> points at the app, which redirects the browser to the presigned S3 URL.
        assert page.get_attribute("#video", "src") == f"/media/clip/{clip.id}"
        wait_for_js(page, "document.getElementById('video').readyState >= 2")
        video = page.evaluate(
            """() => { const v = document.getElementById('video');
                return {duration: v.duration, error: v.error && v.error.message,
                        crossOrigin: v.crossOrigin, currentSrc: v.currentSrc}; }"""
        )
        assert video["error"] is None and video["crossOrigin"] is None
        assert video["currentSrc"] == f"{base}/media/clip/{clip.id}"
        fps = clip.fps
        assert abs(video["duration"] - (clip.end_time - clip.start_time)) <= 1 / fps + 1e-6
        clip_responses = [r for r in s3_responses if clip.storage_key in r.url]
        assert clip_responses, [r.url for r in s3_responses]
        for response in clip_responses:
            request = response.request
            assert_presigned(response.url, s3_store, s3_endpoint, clip.storage_key)
            assert request.redirected_from is not None
            assert request.redirected_from.url == f"{base}/media/clip/{clip.id}"
            # no-cors media requests: the bucket needs no CORS rule for playback.
            assert request.header_value("sec-fetch-mode") == "no-cors"
            assert request.header_value("origin") is None
        # Chromium reads the clip with Range requests, and S3 answers them.
        assert any(r.status == 206 for r in clip_responses), [r.status for r in clip_responses]

        # It plays: play() resolves and the playhead moves.
        start = page.evaluate(
            """async () => { const v = document.getElementById('video');
                await v.play(); return v.currentTime; }"""
        )
        wait_for_js(
            page,
            "t => { const v = document.getElementById('video');"
            " return !v.paused && v.currentTime > t + 0.3; }",
            arg=start,
            timeout=10_000,
        )
        # ... and seeks (close to the last frame) through the redirect.
        page.evaluate(
            "t => { const v = document.getElementById('video'); v.pause(); v.currentTime = t; }",
            (clip.end_frame - clip.start_frame - 1.5) / fps,
        )
        wait_for_js(
            page,
            "() => { const v = document.getElementById('video');"
            " return !v.seeking && v.readyState >= 2; }",
        )
        last = clip.end_frame - clip.start_frame - 2  # the page's frame counter follows the seek
        wait_for_js(page, "n => document.getElementById('frame').textContent == n", arg=last)

        # Keyframes: <img> elements loaded from the bucket at their stored size.
        wait_for_js(
            page,
            "n => { const imgs = [...document.querySelectorAll('.keyframes img')];"
            " return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }",
            arg=len(keyframes),
        )
        widths = page.eval_on_selector_all(
            ".keyframes img", "imgs => imgs.map(i => i.naturalWidth)"
        )
        assert widths == [k.meta["width"] for k in keyframes]
        for k in keyframes:
            assert any(k.storage_key in r.url and r.status == 200 for r in s3_responses)

        # The sprite sheet is the scrubber's CSS background: fetched from the bucket, and as an
        # image it is cols * tile_width wide (the stored metadata, row and sidecar alike).
        background = page.eval_on_selector(
            "#scrub-image", "e => getComputedStyle(e).backgroundImage"
        )
        assert background == f'url("{base}/media/artifact/{sprite.id}")'
        wait_until(page, lambda: any(sprite.storage_key in r.url for r in s3_responses))
        natural = page.evaluate(
            """async url => { const img = new Image(); img.src = url; await img.decode();
                return [img.naturalWidth, img.naturalHeight]; }""",
            f"/media/artifact/{sprite.id}",
        )
        assert natural == [
            sidecar["cols"] * sidecar["tile_width"],
            sidecar["rows"] * sidecar["tile_height"],
        ]
        sprite_responses = [r for r in s3_responses if sprite.storage_key in r.url]
        assert sprite_responses and all(r.status == 200 for r in sprite_responses)
        assert_presigned(sprite_responses[0].url, s3_store, s3_endpoint, sprite.storage_key)

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "review-s3-1280x800.png"))
        assert blocked == [], "the page broke its own Content-Security-Policy"
        context.close()


def test_s3_serves_clips_as_video_mp4(
    db: Database, s3_store: S3ObjectStore, s3_endpoint: str
) -> None:
    vid = states.create_source_video(db, str(SAMPLE_VIDEO), title="Big Buck Bunny (edit)")
    steps.ingest_source_video(db, s3_store, vid)
    clip = states.get_clip(db, steps.splice_source_video(db, s3_store, vid).clip_ids[0])
    with serve(create_app(db, s3_store)) as base:
        status, headers, _ = get(f"{base}/media/clip/{clip.id}")
        assert status == 307
        status, s3_headers, _ = get(headers["location"], {"Range": "bytes=0-99"})
    assert status == 206
    assert s3_headers["content-type"] == "video/mp4"
