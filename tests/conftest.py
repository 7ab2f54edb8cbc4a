"""Shared fixtures: a real PostgreSQL + pgvector (embedded) and a real S3 endpoint (moto's server).

Both are session-scoped and lazy: tests that do not ask for them (e.g. the media tests, which use
only tmp_path) never start them. Each database test gets empty tables (TRUNCATE ... RESTART
IDENTITY, a few milliseconds) on a schema migrated once per session; each S3 test gets its own
bucket.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from heaters_resources.db.embedded_pg import EmbeddedServer, ensure_server, stop_server
from heaters_resources.db.engine import Database
from heaters_resources.store.objects import LocalObjectStore, S3ObjectStore

TABLES = (
    "review_events",
    "pending_object_deletions",
    "clip_embeddings",
    "clip_artifacts",
    "clips",
    "source_videos",
    "leases",
    "review_claims",
    "reviewers",
)


@pytest.fixture(scope="session")
def pg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A HEATERS_HOME whose embedded server lives for the whole session, stopped at the end."""
    home = tmp_path_factory.mktemp("heaters_home")
    yield home
    stop_server(home)


@pytest.fixture(scope="session")
def pg_server(pg_home: Path) -> EmbeddedServer:
    return ensure_server(pg_home)


@pytest.fixture(scope="session")
def session_db(pg_server: EmbeddedServer) -> Iterator[Database]:
    db = Database(pg_server.url)
    db.ensure_migrated()
    yield db
    db.dispose()


@pytest.fixture
def db(session_db: Database) -> Database:
    """The session database with every Heaters table emptied."""
    with session_db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    return session_db


@pytest.fixture
def fresh_database_url(pg_server: EmbeddedServer) -> Iterator[str]:
    """An empty database (no schema) on the session server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = Database(pg_server.url, auto_migrate=False)
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_server.url.replace("/postgres?", f"/{name}?")
    yield url
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, spoken to over HTTP; dummy credentials via the env."""
    from moto.server import ThreadedMotoServer

    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_SESSION_TOKEN",
        )
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_store(s3_endpoint: str) -> S3ObjectStore:
    """An S3 store on a fresh bucket, with a small multipart threshold (5 MiB, S3's minimum)."""
    bucket = f"heaters-{uuid.uuid4().hex[:12]}"
    store = S3ObjectStore(
        bucket,
        prefix="lib",
        region="us-east-1",
        endpoint_url=s3_endpoint,
        multipart_threshold=5 * 1024 * 1024,
        multipart_chunksize=5 * 1024 * 1024,
    )
    store.client.create_bucket(Bucket=bucket)
    return store


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest) -> LocalObjectStore | S3ObjectStore:
    """Both backends, for tests of the shared ObjectStore behaviour."""
    if request.param == "local":
        return request.getfixturevalue("local_store")  # type: ignore[no-any-return]
    return request.getfixturevalue("s3_store")  # type: ignore[no-any-return]
