"""The object store on both backends (local folder, moto's S3 server over HTTP) and cleanup."""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from heaters_resources import states as st
from heaters_resources.db.embedded_pg import EmbeddedServer
from heaters_resources.db.engine import Database
from heaters_resources.db.models import PendingObjectDeletion
from heaters_resources.settings import Settings
from heaters_resources.store import keys
from heaters_resources.store.cleanup import (
    find_orphan_objects,
    purge_scheduled_deletions,
    remove_orphan_objects,
)
from heaters_resources.store.objects import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    object_store_from_settings,
)


def test_roundtrip(any_store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc" * 1000)
    key = keys.clip_key(7, "7_0_10")
    seen: list[int] = []
    assert not any_store.exists(key)
    any_store.upload_file(src, key, content_type="video/mp4", progress=seen.append)
    assert sum(seen) == 3000
    assert any_store.exists(key)
    assert any_store.read_bytes(key) == b"abc" * 1000
    out = any_store.download_file(key, tmp_path / "out" / "x.mp4")
    assert out.read_bytes() == src.read_bytes()
    any_store.upload_bytes(b"{}", keys.sprite_metadata_key(7, "7_0_10", "5x5"))
    listed = sorted(o.key for o in any_store.list("clips/7/"))
    assert listed == ["clips/7/7_0_10.mp4", "clips/7/7_0_10/sprite/5x5.json"]
    with urllib.request.urlopen(any_store.url(key)) as response:
        assert response.read() == b"abc" * 1000
    result = any_store.delete_many([key, key, "clips/7/missing.mp4"])
    assert result.ok and not any_store.exists(key)


def test_invalid_keys_refused(any_store: ObjectStore) -> None:
    for bad in ("", "/abs", "a/../b", "a//b"):
        with pytest.raises(ValueError):
            any_store.upload_bytes(b"x", bad)


def test_s3_batched_delete_of_2500_keys(s3_store: S3ObjectStore) -> None:
    names = [f"clips/1/1_{i}_{i + 1}/keyframes/k_50.jpg" for i in range(2500)]
    calls: list[int] = []
    s3_store.client.meta.events.register(
        "before-call.s3.DeleteObjects",
        lambda **kw: calls.append(
            len(kw["params"]["Delete"]["Objects"]) if "Delete" in kw["params"] else 0
        ),
    )
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3_store.upload_bytes(b"x", k), names))
    assert sum(1 for _ in s3_store.list("clips/1/")) == 2500
    result = s3_store.delete_many(names)
    assert result.ok and len(result.deleted) == 2500
    assert result.requests == 3 and len(calls) == 3
    assert sum(1 for _ in s3_store.list("clips/")) == 0


def test_s3_per_key_failures_reported(s3_endpoint: str) -> None:
    gone = S3ObjectStore(
        "no-such-bucket-xyz", endpoint_url=s3_endpoint, region="us-east-1", max_attempts=2
    )
    result = gone.delete_many([f"clips/1/{i}.mp4" for i in range(1500)])
    assert not result.ok and result.requests == 2
    assert len(result.failed) == 1500 and "NoSuchBucket" in result.failed["clips/1/0.mp4"]


def test_local_per_key_failures_reported(local_store: LocalObjectStore) -> None:
    local_store.upload_bytes(b"x", "clips/1/a.mp4")
    local_store.upload_bytes(b"x", "clips/1/dir.mp4/inner")  # a folder where a file is expected
    result = local_store.delete_many(["clips/1/a.mp4", "clips/1/dir.mp4", "../escape"])
    assert result.deleted == ["clips/1/a.mp4"]
    assert set(result.failed) == {"clips/1/dir.mp4", "../escape"}


def test_s3_multipart_upload_with_progress(s3_store: S3ObjectStore, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    parts: list[str] = []
    s3_store.client.meta.events.register(
        "before-call.s3.UploadPart", lambda **kw: parts.append("part")
    )
    seen: list[int] = []
    s3_store.upload_file(big, "source_videos/3/original.mp4", progress=seen.append)
    assert len(parts) == 3 and sum(seen) == big.stat().st_size
    head = s3_store.client.head_object(
        Bucket=s3_store.bucket, Key="lib/source_videos/3/original.mp4"
    )
    assert head["ContentLength"] == big.stat().st_size and "-3" in head["ETag"]
    out = s3_store.download_file("source_videos/3/original.mp4", tmp_path / "back.bin")
    assert out.read_bytes() == big.read_bytes()


def test_s3_prefix_isolates_keys(s3_store: S3ObjectStore) -> None:
    s3_store.upload_bytes(b"x", "clips/1/1_0_1.mp4")
    raw = s3_store.client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]
    assert [o["Key"] for o in raw] == ["lib/clips/1/1_0_1.mp4"]
    assert [o.key for o in s3_store.list()] == ["clips/1/1_0_1.mp4"]


def test_store_from_settings(tmp_path: Path, s3_endpoint: str) -> None:
    local = object_store_from_settings(Settings(home=tmp_path))
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objects"
    s3 = object_store_from_settings(
        Settings(home=tmp_path, s3_bucket="b", s3_prefix="p/", s3_endpoint_url=s3_endpoint)
    )
    assert isinstance(s3, S3ObjectStore) and s3.prefix == "p/"


def test_keys_from_ids_only() -> None:
    assert keys.clip_key(3, "3_10_20") == "clips/3/3_10_20.mp4"
    assert (
        keys.keyframe_key(3, "3_10_20", "midpoint", 50)
        == "clips/3/3_10_20/keyframes/midpoint_50.jpg"
    )
    assert keys.source_original_key(3, ".MKV") == "source_videos/3/original.mkv"
    for bad in (
        lambda: keys.clip_key(4, "3_10_20"),
        lambda: keys.clip_identifier(1, 5, 5),
        lambda: keys.sprite_key(3, "3_10_20", "../x"),
        lambda: keys.keyframe_key(3, "3_0_1", "a b", 1),
    ):
        with pytest.raises(ValueError):
            bad()


def _video_with_objects(db: Database, store: ObjectStore) -> tuple[int, list[int]]:
    vid = st.create_source_video(db, "x")
    st.start_downloading(db, vid)
    store.upload_bytes(b"v", keys.source_original_key(vid, "mp4"))
    st.complete_downloading(
        db,
        vid,
        original_key=keys.source_original_key(vid, "mp4"),
        fps=10.0,
        frame_count=100,
        store=store,
    )
    st.start_splicing(db, vid)
    for a, b in ((0, 50), (50, 100)):
        store.upload_bytes(b"c", keys.clip_key(vid, keys.clip_identifier(vid, a, b)))
    ids = st.create_clips_from_splice(
        db, vid, [st.ClipSpec(0, 50), st.ClipSpec(50, 100)], store=store
    )
    return vid, ids


@pytest.mark.parametrize("backend", ["local_store", "s3_store"])
def test_orphan_cleanup(db: Database, backend: str, request: pytest.FixtureRequest) -> None:
    store: ObjectStore = request.getfixturevalue(backend)
    vid, (c1, _) = _video_with_objects(db, store)
    ident = keys.clip_identifier(vid, 0, 50)
    # a crash after upload, before the row update: the keyframe object has no row
    orphan = keys.keyframe_key(vid, ident, "midpoint", 50)
    store.upload_bytes(b"k", orphan)
    store.upload_bytes(b"unmanaged", "exports/keep.txt")
    assert find_orphan_objects(db, store) == []  # too young: maybe an upload in flight
    assert find_orphan_objects(db, store, min_age=timedelta(0)) == [orphan]
    result = remove_orphan_objects(db, store, min_age=timedelta(0))
    assert result.deleted == [orphan] and not store.exists(orphan)
    assert store.exists("exports/keep.txt") and store.exists(keys.clip_key(vid, ident))
    # the retry repairs the step: upload again, then the row
    st.start_keyframing(db, c1)
    store.upload_bytes(b"k", orphan)
    st.complete_keyframing(db, c1, [st.ArtifactSpec("keyframe", "midpoint", orphan)], store=store)
    assert find_orphan_objects(db, store, min_age=timedelta(0)) == []


def test_cleanup_command_removes_only_old_orphans(
    db: Database,
    local_store: LocalObjectStore,
    pg_server: EmbeddedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`heaters cleanup`: what a crashed step left behind goes, referenced objects stay."""
    from typer.testing import CliRunner

    from heaters_resources.cli.main import app

    vid, _ = _video_with_objects(db, local_store)
    ident = keys.clip_identifier(vid, 0, 50)
    orphan = keys.keyframe_key(vid, ident, "midpoint", 50)
    local_store.upload_bytes(b"k", orphan)
    monkeypatch.setenv("HEATERS_HOME", str(local_store.root.parent))
    monkeypatch.setenv("HEATERS_DATABASE_URL", pg_server.url)
    runner = CliRunner()
    young = runner.invoke(app, ["cleanup"])  # default: an hour's grace for uploads in flight
    assert young.exit_code == 0, young.output
    assert json.loads(young.output)["orphans_deleted"] == [] and local_store.exists(orphan)
    dry = runner.invoke(app, ["cleanup", "--min-age-hours", "0", "--dry-run"])
    assert json.loads(dry.output) == {"orphans": [orphan]} and local_store.exists(orphan)
    done = runner.invoke(app, ["cleanup", "--min-age-hours", "0"])
    assert json.loads(done.output)["orphans_deleted"] == [orphan]
    assert not local_store.exists(orphan) and local_store.exists(keys.clip_key(vid, ident))


@pytest.mark.parametrize("backend", ["local_store", "s3_store"])
def test_purge_scheduled_deletions(
    db: Database, backend: str, request: pytest.FixtureRequest
) -> None:
    store: ObjectStore = request.getfixturevalue(backend)
    vid, _ = _video_with_objects(db, store)
    st.start_splicing(db, vid, overwrite=True)
    store.upload_bytes(b"c", keys.clip_key(vid, f"{vid}_0_100"))
    st.create_clips_from_splice(db, vid, [st.ClipSpec(0, 100)], overwrite=True, store=store)
    result = purge_scheduled_deletions(db, store)
    assert sorted(result.deleted) == sorted(
        [keys.clip_key(vid, f"{vid}_0_50"), keys.clip_key(vid, f"{vid}_50_100")]
    )
    assert store.exists(keys.clip_key(vid, f"{vid}_0_100"))
    with db.session() as s:
        assert s.execute(select(func.count()).select_from(PendingObjectDeletion)).scalar() == 0


def _same_bucket(store: S3ObjectStore, endpoint_url: str, **options: Any) -> S3ObjectStore:
    """A second client on the fixture's bucket and prefix (own hooks, endpoint, retries)."""
    return S3ObjectStore(
        store.bucket, prefix=store.prefix, region="us-east-1", endpoint_url=endpoint_url, **options
    )


def _refuse_deleting(store: S3ObjectStore, refused: str) -> None:
    """Make S3 refuse one key of every DeleteObjects, as AWS does for a key a policy protects.

    moto answers per-key errors only for locked object versions, never for the plain keys this
    store deletes, so the refusal is staged at the client's edge: the key is taken out of the
    request that goes to the server (the object really stays) and the answer gets the
    `Errors` entry S3 would send for it (documented shape: Key, Code, Message)."""
    full = store.prefix + refused

    def drop(params: dict[str, Any], **_: Any) -> None:
        objects = params["Delete"]["Objects"]
        params["Delete"]["Objects"] = [o for o in objects if o["Key"] != full] or objects

    def answer(parsed: dict[str, Any], **_: Any) -> None:
        parsed.setdefault("Errors", []).append(
            {"Key": full, "Code": "AccessDenied", "Message": "Access Denied"}
        )

    store.client.meta.events.register("before-parameter-build.s3.DeleteObjects", drop)
    store.client.meta.events.register("after-call.s3.DeleteObjects", answer)


def test_s3_refused_key_stays_scheduled_and_is_retried(
    db: Database, s3_store: S3ObjectStore
) -> None:
    """A key S3 refuses to delete is reported per key, keeps its object and its schedule row,
    and goes at the next purge; the keys deleted beside it are not retried."""
    vid, _ = _video_with_objects(db, s3_store)
    old = [keys.clip_key(vid, f"{vid}_0_50"), keys.clip_key(vid, f"{vid}_50_100")]
    st.start_splicing(db, vid, overwrite=True)
    s3_store.upload_bytes(b"c", keys.clip_key(vid, f"{vid}_0_100"))
    st.create_clips_from_splice(db, vid, [st.ClipSpec(0, 100)], overwrite=True, store=s3_store)

    fresh = _same_bucket(s3_store, s3_store.client.meta.endpoint_url)
    _refuse_deleting(s3_store, old[1])
    result = purge_scheduled_deletions(db, s3_store)
    assert result.deleted == [old[0]] and not s3_store.exists(old[0])
    assert set(result.failed) == {old[1]} and "AccessDenied" in result.failed[old[1]]
    assert s3_store.exists(old[1])
    with db.session() as s:
        left = s.execute(select(PendingObjectDeletion.storage_key)).scalars().all()
    assert left == [old[1]]

    retry = purge_scheduled_deletions(db, fresh)  # the refusal lifted
    assert retry.deleted == [old[1]] and retry.ok and not fresh.exists(old[1])
    with db.session() as s:
        assert s.execute(select(func.count()).select_from(PendingObjectDeletion)).scalar() == 0


class _FlakyS3Proxy:
    """An HTTP proxy in front of moto that answers the next `fail` requests with an S3 error
    (503 SlowDown by default), as S3 does under throttling, and forwards the others."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlparse

        target = urlparse(upstream)
        proxy = self
        self.fail = 0
        self.status, self.code = 503, "SlowDown"
        self.seen: list[tuple[str, int]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.fail > 0:
                    proxy.fail -= 1
                    proxy.seen.append((self.command, proxy.status))
                    error = (
                        f"<Error><Code>{proxy.code}</Code><Message>try again</Message></Error>"
                    ).encode()
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                answer = conn.getresponse()
                data = answer.read()
                proxy.seen.append((self.command, answer.status))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "server",
                        "date",
                    ):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_s3(s3_store: S3ObjectStore) -> Any:
    proxy = _FlakyS3Proxy(s3_store.client.meta.endpoint_url)
    yield proxy
    proxy.close()


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_s3_throttling_and_5xx_are_retried(
    s3_store: S3ObjectStore, flaky_s3: Any, status: int, code: str
) -> None:
    """Two throttled / failed answers in a row: botocore's standard retry mode tries again and
    the upload, the read and the batched delete all succeed."""
    store = _same_bucket(s3_store, flaky_s3.url, max_attempts=4)
    flaky_s3.status, flaky_s3.code = status, code
    flaky_s3.fail = 2
    store.upload_bytes(b"payload", "clips/1/a.mp4")
    assert flaky_s3.seen[:3] == [("PUT", status), ("PUT", status), ("PUT", 200)]
    flaky_s3.fail = 2
    assert store.read_bytes("clips/1/a.mp4") == b"payload"
    flaky_s3.fail = 2
    result = store.delete_many(["clips/1/a.mp4"])
    assert result.ok and result.deleted == ["clips/1/a.mp4"]
    assert not s3_store.exists("clips/1/a.mp4")


def test_s3_retries_are_bounded(s3_store: S3ObjectStore, flaky_s3: Any) -> None:
    """Throttled beyond `max_attempts`: the error reaches the caller and nothing is written."""
    from botocore.exceptions import ClientError

    store = _same_bucket(s3_store, flaky_s3.url, max_attempts=2)
    flaky_s3.fail = 5
    with pytest.raises(ClientError, match="SlowDown"):
        store.upload_bytes(b"payload", "clips/1/b.mp4")
    assert flaky_s3.seen == [("PUT", 503), ("PUT", 503)]
    assert not s3_store.exists("clips/1/b.mp4")
