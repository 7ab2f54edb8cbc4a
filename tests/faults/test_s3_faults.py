"""S3 answering 5xx in bursts: a real HTTP proxy in front of moto's S3 server answers 503
SlowDown to every request while a burst lasts. Short bursts are absorbed by boto3's retries;
a long one fails the step with its reason stored, and the retry after it completes with the
stored objects exactly the ones rows reference."""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from heaters_media.samples import SAMPLE_VIDEO
from heaters_resources import states, steps
from heaters_resources.db.engine import Database
from heaters_resources.states import leases
from heaters_resources.store.cleanup import referenced_keys
from heaters_resources.store.keys import MANAGED_PREFIXES
from heaters_resources.store.objects import S3ObjectStore

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class Faulty:
    """How many of the next requests fail (``burst``), or all of them (``down``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.burst = 0
        self.down = False
        self.failed = 0

    def should_fail(self) -> bool:
        with self.lock:
            if self.down or self.burst > 0:
                self.burst = max(0, self.burst - 1)
                self.failed += 1
                return True
            return False


def _proxy(upstream: str, faulty: Faulty) -> ThreadingHTTPServer:
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if faulty.should_fail():
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOW_DOWN)))
                self.end_headers()
                self.wfile.write(SLOW_DOWN)
                return
            conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = target.netloc
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that gave up mid-answer: nothing to report

    return Server(("127.0.0.1", 0), Handler)


@pytest.fixture
def flaky_store(s3_endpoint: str) -> Iterator[tuple[S3ObjectStore, Faulty]]:
    faulty = Faulty()
    server = _proxy(s3_endpoint, faulty)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bucket = f"flaky-{uuid.uuid4().hex[:12]}"
    store = S3ObjectStore(
        bucket,
        region="us-east-1",
        endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
        # Two attempts to spare over the longest short burst (3): on a loaded machine a pooled
        # connection is now and then closed under a request (ConnectionClosedError, which
        # boto3 also retries), and with one to spare that made the test flaky.
        max_attempts=6,
    )
    store.client.create_bucket(Bucket=bucket)
    yield store, faulty
    server.shutdown()
    server.server_close()


def _assert_consistent(db: Database, store: S3ObjectStore) -> None:
    stored = {info.key for prefix in MANAGED_PREFIXES for info in store.list(prefix)}
    with db.session() as s:
        assert stored == referenced_keys(s)
    assert leases.reap(db, dry_run=True) == []


def test_short_bursts_are_absorbed_and_a_long_one_fails_then_retries(
    db: Database, flaky_store: tuple[S3ObjectStore, Faulty]
) -> None:
    store, faulty = flaky_store
    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    faulty.burst = 2  # fewer than boto3's attempts: nobody notices
    steps.ingest_source_video(db, store, vid)
    assert faulty.failed == 2 and states.get_source_video(db, vid).state == "downloaded"

    faulty.down = True  # S3 answers 503 to everything for a while
    with pytest.raises(Exception, match=r"\(503\)"):
        steps.splice_source_video(db, store, vid)
    video = states.get_source_video(db, vid)
    assert video.state == "splicing_failed" and "(503)" in (video.error or "")
    assert "reached max retries" in (video.error or "")

    faulty.down = False  # the burst is over: the natural retry completes
    spliced = steps.splice_source_video(db, store, vid)
    faulty.burst = 3
    out = steps.keyframe_clips(db, store, spliced.identifiers)
    assert not out.failed and len(out.done) == len(spliced.identifiers)
    _assert_consistent(db, store)
