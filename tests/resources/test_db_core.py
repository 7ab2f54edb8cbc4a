"""Database layer: embedded server lifecycle, migrations, URLs, search, CLI, Dagster resources."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from heaters_resources import states as st
from heaters_resources.db.embedded_pg import EmbeddedServer, running_server, stop_server
from heaters_resources.db.engine import (
    Database,
    current_revision,
    head_revision,
    migrate,
    normalize_url,
)
from heaters_resources.search import ensure_hnsw_index, nearest_clips
from heaters_resources.search.index import index_kind, nearest_statement
from heaters_resources.settings import Settings

START = (
    "import json, sys; from heaters_resources.db.embedded_pg import ensure_server; "
    "s = ensure_server(sys.argv[1]); print(json.dumps([s.url, s.pid, s.started]))"
)


def _start_in_subprocess(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", START, str(home)], stdout=subprocess.PIPE, text=True
    )


def _result(proc: subprocess.Popen[str]) -> tuple[str, int, bool]:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    url, pid, started = json.loads(out.strip().splitlines()[-1])
    return url, pid, started


def test_embedded_server_is_shared_and_outlives_its_starter(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        # two processes race to start the server: exactly one starts it, both get the same one
        procs = [_start_in_subprocess(home) for _ in range(2)]
        results = [_result(p) for p in procs]
        assert sorted(r[2] for r in results) == [False, True]
        assert results[0][:2] == results[1][:2]
        # both starters have exited; the server is still running, and a third process reuses it
        url, pid, started = _result(_start_in_subprocess(home))
        assert (url, pid, started) == (*results[0][:2], False)
        running = running_server(home)
        assert running is not None and running.pid == pid
        db = Database(url)
        with db.session() as s:
            assert (
                s.execute(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                ).scalar()
                is not None
            )
        db.dispose()
    finally:
        assert stop_server(home)
    assert running_server(home) is None


def test_migrations_idempotent_and_concurrent(fresh_database_url: str) -> None:
    db = Database(fresh_database_url, auto_migrate=False)
    assert current_revision(db.engine) is None
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(Database(fresh_database_url, auto_migrate=False).engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert current_revision(db.engine) == head_revision()
    assert migrate(db.engine) == head_revision()  # again: a no-op
    db.dispose()


def test_auto_migrate_on_first_use(fresh_database_url: str) -> None:
    db = Database(fresh_database_url)
    vid = st.create_source_video(db, "x")
    assert vid == 1 and current_revision(db.engine) == head_revision()
    db.dispose()


def test_url_normalization() -> None:
    assert normalize_url("postgresql://u:p@h:5432/d") == "postgresql+psycopg2://u:p@h:5432/d"
    assert normalize_url("postgres://u@h/d").startswith("postgresql+psycopg2://")
    assert normalize_url("postgresql+psycopg://u@h/d").startswith("postgresql+psycopg2://")
    with pytest.raises(ValueError):
        normalize_url("sqlite:///x.db")


def test_settings_from_env(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "HEATERS_HOME": str(tmp_path),
            "HEATERS_S3_BUCKET": " ",
            "HEATERS_DATABASE_URL": "postgresql://h/d",
        }
    )
    assert s.home == tmp_path and s.s3_bucket is None and s.database_url == "postgresql://h/d"
    assert s.pgdata_dir == tmp_path / "pgdata"
    assert Settings.from_env({}).home == (Path.cwd() / ".heaters").resolve()


def test_external_url_uses_same_path(pg_server: EmbeddedServer, db: Database) -> None:
    from heaters_resources.db.engine import database_url, get_database

    settings = Settings(home=Path("/nonexistent"), database_url=pg_server.url)
    assert database_url(settings) == pg_server.url
    assert get_database(settings) is get_database(settings)


def test_nearest_neighbours_match_numpy_cosine(db: Database) -> None:
    rng = np.random.default_rng(0)
    vid = st.create_source_video(db, "x")
    st.start_downloading(db, vid)
    st.complete_downloading(db, vid, original_key="source_videos/1/original.mp4", fps=10.0)
    st.start_splicing(db, vid)
    ids = st.create_clips_from_splice(db, vid, [st.ClipSpec(i, i + 1) for i in range(200)])
    vectors = rng.normal(size=(200, 384)).astype(np.float32)
    for cid, vec in zip(ids, vectors, strict=True):
        st.store_embedding(
            db, cid, vec.tolist(), model_name="facebook/dinov2-small", generation_strategy="center"
        )
    st.store_embedding(db, ids[0], [1.0, 2.0], model_name="other", generation_strategy="x")
    query = rng.normal(size=384).astype(np.float32)
    cos = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    expected = [ids[i] for i in np.argsort(1 - cos)[:10]]
    got = nearest_clips(db, query.tolist(), model_name="facebook/dinov2-small", limit=10)
    assert [n.clip_id for n in got] == expected
    assert [n.distance for n in got] == pytest.approx(sorted(1 - cos)[:10], abs=1e-5)
    assert (
        nearest_clips(db, query.tolist(), model_name="facebook/dinov2-small", states=["approved"])
        == []
    )
    assert [n.clip_id for n in nearest_clips(db, [1.0, 2.0], model_name="other")] == [ids[0]]


def _plan_of_nearest(db: Database, model: str, query: list[float]) -> str:
    """EXPLAIN of the query nearest_clips runs (its own SQL and casts), sequential scans off:
    an index whose expression does not match the query's cast shows up as a Seq Scan."""
    stmt = nearest_statement(db, query, model_name=model, limit=5)
    dialect = db.engine.dialect
    compiled = stmt.compile(dialect=dialect)
    params = {}
    for key, value in compiled.params.items():
        process = compiled.binds[key].type.bind_processor(dialect)
        params[key] = process(value) if process else value
    with db.engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + str(compiled), params))


@pytest.mark.parametrize("kind", ["halfvec", "vector"])
def test_hnsw_index_of_either_kind_is_used_and_ranks(db: Database, kind: str) -> None:
    """Both index kinds: the query casts the column as the model's index does (read from the
    catalog), so the planner uses the index; halfvec ranks in half precision, the distances
    shown are still the exact ones."""
    model = f"my/model-{kind}"
    name = ensure_hnsw_index(db, model, 64, kind=kind)
    assert index_kind(db, model) == kind
    assert name in _plan_of_nearest(db, model, [1.0] + [0.0] * 63)
    rng = np.random.default_rng(7)
    vid = st.create_source_video(db, f"/v/{kind}.mp4")
    st.start_downloading(db, vid)
    st.complete_downloading(db, vid, original_key="k", fps=25.0, frame_count=300)
    st.start_splicing(db, vid)
    ids = st.create_clips_from_splice(db, vid, [st.ClipSpec(i, i + 1) for i in range(300)])
    vectors = rng.normal(size=(300, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for cid, vec in zip(ids, vectors, strict=True):
        st.store_embedding(db, cid, vec.tolist(), model_name=model, generation_strategy="s")
    query = vectors[5] + 0.05 * rng.normal(size=64).astype(np.float32)
    exact = 1.0 - vectors @ (query / np.linalg.norm(query))
    got = nearest_clips(db, query.tolist(), model_name=model, limit=10)
    assert got[0].clip_id == ids[5]
    truth = {ids[i] for i in np.argsort(exact)[:10]}
    assert len({n.clip_id for n in got} & truth) >= 9  # HNSW (and half precision) at 300
    for n in got:  # ranked in half precision, the distances shown are exact
        assert n.distance == pytest.approx(exact[ids.index(n.clip_id)], abs=1e-5)
    assert [n.distance for n in got] == sorted(n.distance for n in got)
    # The initial migration's indexes became halfvec (migration 0008, on an empty library).
    assert index_kind(db, "facebook/dinov2-small") == "halfvec"
    with pytest.raises(ValueError, match="dimension for a vector index"):
        ensure_hnsw_index(db, "my/too-wide", 3000, kind="vector")
    assert ensure_hnsw_index(db, "my/wide-half", 3000, kind="halfvec")


def test_cli(
    pg_server: EmbeddedServer, pg_home: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heaters_resources.cli.main import app

    monkeypatch.setenv("HEATERS_HOME", str(pg_home))
    monkeypatch.delenv("HEATERS_DATABASE_URL", raising=False)
    runner = CliRunner()
    bare = runner.invoke(app, [])  # no_args_is_help: usage on stdout, click's usage exit code
    assert bare.exit_code == 2 and "Usage: heaters" in bare.output and "demo" in bare.output
    res = runner.invoke(app, ["db-url"])
    assert res.exit_code == 0 and res.output.strip() == pg_server.url
    res = runner.invoke(app, ["migrate"])
    assert res.exit_code == 0 and head_revision() in res.output
    st.create_source_video(db, "x")
    res = runner.invoke(app, ["db-status"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["source_videos"] == {"new": 1}


def test_dagster_resources(pg_server: EmbeddedServer, db: Database, tmp_path: Path) -> None:
    from heaters_resources.orchestration.resources import (
        DatabaseResource,
        ObjectStoreResource,
        SettingsResource,
    )
    from heaters_resources.store.objects import LocalObjectStore

    resource = DatabaseResource(database_url=pg_server.url)
    with resource.session() as s:
        assert s.execute(text("SELECT 1")).scalar() == 1
    assert resource.get_database() is resource.get_database()
    store = ObjectStoreResource(heaters_home=str(tmp_path)).get_store()
    assert isinstance(store, LocalObjectStore) and store.root == tmp_path / "objects"
    assert SettingsResource(heaters_home=str(tmp_path)).get_settings().home == tmp_path


def _terminate(db: Database, pids: list[int]) -> None:
    """Kill server backends the way a restart or a network cut does (from another connection)."""
    admin = Database(db.url, auto_migrate=False, pool_size=1)
    with admin.engine.begin() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(p) FROM unnest(CAST(:p AS int[])) p"), {"p": pids}
        )
    admin.dispose()


def test_connection_killed_mid_transaction_is_retried_cleanly(db: Database) -> None:
    """The server drops the connection half-way through a transaction: the half is rolled back,
    `Database.run` retries on a fresh connection, and the work lands exactly once."""
    calls: list[int] = []

    def work(session: Any) -> int:
        pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        calls.append(pid)
        vid = int(
            session.execute(
                text("INSERT INTO source_videos (source) VALUES ('killed') RETURNING id")
            ).scalar_one()
        )
        if len(calls) == 1:
            _terminate(db, [pid])
        session.execute(text("UPDATE source_videos SET title = 'done' WHERE id = :v"), {"v": vid})
        return vid

    vid = db.run(work)
    assert len(calls) == 2 and calls[0] != calls[1]
    with db.session() as s:
        rows = s.execute(text("SELECT id, title FROM source_videos WHERE source = 'killed'")).all()
    assert [tuple(r) for r in rows] == [(vid, "done")]


def test_transitions_survive_dropped_idle_connections(db: Database) -> None:
    """Every pooled connection killed while idle (a database restart): the next transition
    gets a live one (pool pre-ping, else `Database.run`'s retry), without an error."""
    vid = st.create_source_video(db, "https://example.test/v")
    db.engine.dispose()  # the pool now holds exactly the one connection opened below

    def pid() -> int:
        with db.engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    killed = pid()
    _terminate(db, [killed])
    assert st.start_downloading(db, vid).to_state == "downloading"
    assert pid() != killed


def test_lost_connection_retries_are_bounded(db: Database) -> None:
    """A connection that keeps dying is retried `retries` times, then the error is raised."""
    calls: list[int] = []

    def always_killed(session: Any) -> None:
        pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        calls.append(pid)
        _terminate(db, [pid])
        session.execute(text("SELECT 1"))

    with pytest.raises(OperationalError):
        db.run(always_killed, retries=2, backoff=0.01)
    assert len(calls) == 3


def test_migration_0008_makes_empty_default_indexes_halfvec(
    fresh_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """0008 turns the initial migration's empty `vector` indexes into `halfvec` ones and back
    on downgrade; an index that has vectors is left alone, and `heaters reindex` converts it
    (queries follow the index: the same neighbours before and after)."""
    from alembic import command

    from heaters_resources.db.engine import alembic_config

    def kinds() -> dict[str, str]:
        with db.engine.connect() as conn:
            defs = dict(
                conn.execute(
                    text(
                        "SELECT indexname, indexdef FROM pg_indexes "
                        "WHERE indexname LIKE 'ix_clip_embeddings_hnsw_%'"
                    )
                ).all()
            )
        return {
            n[len("ix_clip_embeddings_hnsw_") :]: d.split("::")[1].split("(")[0]
            for n, d in defs.items()
        }

    db = Database(fresh_database_url, auto_migrate=False)
    try:
        migrate(db.engine, "0007_reviewers_claims")
        both = {"openai_clip_vit_base_patch32", "facebook_dinov2_small"}
        assert {k: v for k, v in kinds().items() if k in both} == dict.fromkeys(both, "vector")
        vid = st.create_source_video(db, "/v/x.mp4")
        st.start_downloading(db, vid)
        st.complete_downloading(db, vid, original_key="k", fps=25.0, frame_count=20)
        st.start_splicing(db, vid)
        ids = st.create_clips_from_splice(db, vid, [st.ClipSpec(i, i + 1) for i in range(20)])
        rng = np.random.default_rng(1)
        for cid in ids:  # DINOv2 vectors exist: its index stays as it is
            st.store_embedding(
                db,
                cid,
                rng.normal(size=384).tolist(),
                model_name="facebook/dinov2-small",
                generation_strategy="s",
            )
        migrate(db.engine)
        assert kinds()["openai_clip_vit_base_patch32"] == "halfvec"
        assert kinds()["facebook_dinov2_small"] == "vector"
        query = rng.normal(size=384).tolist()
        before = nearest_clips(db, query, model_name="facebook/dinov2-small", limit=5)

        from heaters_resources.cli.main import app

        monkeypatch.setenv("HEATERS_DATABASE_URL", fresh_database_url)
        monkeypatch.setenv("HEATERS_HOME", str(tmp_path))
        done = CliRunner().invoke(app, ["reindex", "facebook/dinov2-small", "--json"])
        assert done.exit_code == 0, done.output
        report = json.loads(done.stdout)
        assert (report["was"], report["kind"], report["dimension"]) == ("vector", "halfvec", 384)
        assert kinds()["facebook_dinov2_small"] == "halfvec"
        after = nearest_clips(db, query, model_name="facebook/dinov2-small", limit=5)
        assert [n.clip_id for n in after] == [n.clip_id for n in before]
        assert [n.distance for n in after] == pytest.approx([n.distance for n in before])
        missing = CliRunner().invoke(app, ["reindex", "no/such-model"])
        assert missing.exit_code == 2 and "nothing to rebuild" in missing.stderr
        command.downgrade(alembic_config(fresh_database_url), "0007_reviewers_claims")
        assert kinds()["openai_clip_vit_base_patch32"] == "vector"
    finally:
        db.dispose()
