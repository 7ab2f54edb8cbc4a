"""The read paths that must stay fast on a large library (issue 15): `heaters status` counts,
the export's one-query rounds, undo's and the progress panel's lookups, the missing-embedding
anti-join, and migration 0004 that indexes them (and leaves `clips.state` unindexed)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, text
from typer.testing import CliRunner

from heaters_resources import export, states
from heaters_resources.db.embedded_pg import EmbeddedServer
from heaters_resources.db.engine import Database, alembic_config, current_revision, migrate
from heaters_resources.review import queries
from heaters_resources.steps import embeddings

REVISION = "0004_review_events_lookups"
REVIEW_INDEXES = {"ix_review_events_actor_id", "ix_review_events_undoes_event_id"}


def _video(db: Database, bounds: list[tuple[int, int]], title: str = "v") -> tuple[int, list[int]]:
    vid = states.create_source_video(db, f"/videos/{title}.mp4", title=title)
    states.start_downloading(db, vid)
    states.complete_downloading(
        db, vid, original_key=f"source_videos/{vid}/o.mp4", fps=25.0, frame_count=10_000
    )
    states.start_splicing(db, vid)
    return vid, states.create_clips_from_splice(db, vid, [states.ClipSpec(a, b) for a, b in bounds])


def _to_review(
    db: Database,
    ids: list[int],
    keyframes: dict[int, list[states.ArtifactSpec]] | None = None,
    sprites: dict[int, list[states.ArtifactSpec]] | None = None,
) -> None:
    states.start_keyframing_many(db, ids)
    states.complete_keyframing_many(db, {c: (keyframes or {}).get(c, []) for c in ids})
    states.start_sprite_generation_many(db, ids)
    states.complete_sprite_generation_many(db, {c: (sprites or {}).get(c, []) for c in ids})


@contextmanager
def _statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The SQL (and parameters) that `db` sends while the block runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def _plans(db: Database, call: Callable[[], object], table: str, *settings: str) -> list[str]:
    """EXPLAIN of every statement on `table` that `call` sends, under `settings`."""
    with _statements(db) as seen:
        call()
    plans = []
    with db.engine.connect() as conn:
        for setting in settings:
            conn.execute(text(setting))
        for statement, params in seen:
            if f"FROM {table}" in statement:
                rows = conn.exec_driver_sql("EXPLAIN " + statement, params).all()
                plans.append("\n".join(row[0] for row in rows))
        conn.rollback()
    assert plans, f"no statement on {table}"
    return plans


# --------------------------------------------------------------------------- heaters status


def test_status_counts_per_video_and_in_total(
    db: Database, pg_server: EmbeddedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heaters_resources.cli.main import app

    v1, (a, b, c) = _video(db, [(0, 10), (10, 20), (20, 30)], "one")
    _to_review(db, [a, b, c])
    states.approve_clip(db, b)
    v2, _ = _video(db, [(0, 10), (10, 20)], "two")
    v3 = states.create_source_video(db, "/videos/none.mp4", title="none")
    monkeypatch.setenv("HEATERS_DATABASE_URL", pg_server.url)
    monkeypatch.setenv("HEATERS_HOME", str(tmp_path / "home"))

    result = CliRunner().invoke(app, ["status", "--json", "--video", str(v1)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(v["id"], v["clips"]) for v in out["videos"]] == [
        (v1, {"pending_review": 2, "approved": 1}),
        (v2, {"spliced": 2}),
        (v3, {}),
    ]
    assert list(out["clips_by_state"].items()) == [
        ("approved", 1),
        ("pending_review", 2),
        ("spliced", 2),
    ]
    assert [(x["id"], x["state"]) for x in out["clips"]] == [
        (a, "pending_review"),
        (b, "approved"),
        (c, "pending_review"),
    ]
    table = CliRunner().invoke(app, ["status"], terminal_width=200)
    assert table.exit_code == 0, table.output
    assert "clips by state: approved 1, pending_review 2, spliced 2" in table.stdout
    assert "{" not in table.stdout  # a table, not JSON
    assert "spliced (cut into clips)" in table.stdout  # states in words for newcomers


# --------------------------------------------------------------------------- export


def test_manifest_artifact_keys_aggregated_per_clip(db: Database) -> None:
    """Keyframe keys in artifact order, the first sprite sheet and its sidecar, nothing for a
    clip without artifacts; embeddings per clip."""
    vid, (a, b, c) = _video(db, [(0, 10), (10, 20), (20, 30)])
    kf = [
        states.ArtifactSpec("keyframe", "multi", f"k/{a}/{tag}.jpg", tag=tag)
        for tag in ("75", "25", "50")
    ]
    sprites = [
        states.ArtifactSpec("sprite_sheet", "w48", f"s/{a}/1.jpg", sidecar_key=f"s/{a}/1.json"),
        states.ArtifactSpec("sprite_sheet", "w96", f"s/{a}/2.jpg", sidecar_key=f"s/{a}/2.json"),
    ]
    _to_review(
        db,
        [a, b, c],
        keyframes={a: kf, c: [states.ArtifactSpec("keyframe", "mid", f"k/{c}.jpg")]},
        sprites={a: sprites},
    )
    for cid in (a, b, c):
        states.approve_clip(db, cid)
    states.store_embedding(db, c, [0.6, 0.8], model_name="m", generation_strategy="s")

    rows = {r["clip_id"]: r for r in export.manifest_rows(db, embeddings=True, batch=2)}
    assert list(rows) == [a, b, c]
    assert rows[a]["keyframe_keys"] == [f"k/{a}/75.jpg", f"k/{a}/25.jpg", f"k/{a}/50.jpg"]
    assert (rows[a]["sprite_key"], rows[a]["sprite_metadata_key"]) == (
        f"s/{a}/1.jpg",
        f"s/{a}/1.json",
    )
    assert rows[b]["keyframe_keys"] == [] and rows[b]["sprite_key"] is None
    assert rows[b]["sprite_metadata_key"] is None and rows[b]["parent_clip_ids"] == []
    assert rows[c]["keyframe_keys"] == [f"k/{c}.jpg"] and rows[c]["sprite_key"] is None
    assert rows[a]["embeddings"] == [] and [e["model_name"] for e in rows[c]["embeddings"]] == ["m"]
    assert rows[b]["duration"] == rows[b]["end_time"] - rows[b]["start_time"] == 0.4
    assert isinstance(rows[a]["start_time"], float) and rows[a]["source_video_id"] == vid
    assert [r["clip_id"] for r in export.manifest_rows(db, video_id=vid, states=("x",))] == []


# --------------------------------------------------------------------------- undo lookups


def test_undo_lookups_find_the_newest_live_event(db: Database) -> None:
    """Undone events and undo events are never picked; an event on two clips is found from
    either (the `@>` lookup); the newest wins among several on one clip."""
    _, (a, b, c) = _video(db, [(0, 10), (10, 20), (20, 30)])
    _to_review(db, [a, b, c])
    e1 = states.approve_clip(db, a, actor="ann")
    states.undo_review(db, a, actor="ann")
    e3 = states.skip_clip(db, a, actor="bob")
    e4 = states.approve_clip(db, b, actor="ann")
    e5 = states.request_merge(db, c, actor="bob")  # clips b and c

    assert queries.latest_event_on_clip(db, a)[:2] == (e3, "skip")
    assert queries.latest_event_on_clip(db, b)[:2] == (e5, "request_merge")
    assert queries.latest_event_on_clip(db, c)[:2] == (e5, "request_merge")
    assert queries.latest_undoable_event(db, "bob") == (e5, [b, c])
    assert queries.latest_undoable_event(db, "ann") == (e4, [b])
    assert queries.latest_undoable_event(db, "nobody") is None

    states.undo_review(db, c, actor="bob")  # undoes the merge: b approved, c pending again
    assert queries.latest_event_on_clip(db, b)[:2] == (e4, "approve")
    assert queries.latest_event_on_clip(db, c)[:2] == (None, None)
    assert queries.latest_undoable_event(db, "bob") == (e3, [a])
    assert e1 < e3


def test_undo_lookups_are_index_scans_and_anti_joins(db: Database) -> None:
    """With sequential scans priced out the clip lookup reads the GIN index on `clip_ids`
    (`= ANY(clip_ids)` could not) and "not undone" is an anti-join, never a subplan re-run
    per event."""
    _, (a,) = _video(db, [(0, 10)])
    _to_review(db, [a])
    states.approve_clip(db, a, actor="ann")
    off = "SET LOCAL enable_seqscan = off"
    on_clip = _plans(db, lambda: queries.latest_event_on_clip(db, a), "review_events", off)
    by_actor = _plans(db, lambda: queries.latest_undoable_event(db, "ann"), "review_events", off)
    undo = _plans(db, lambda: states.undo_review(db, a, actor="ann"), "review_events", off)
    assert "ix_review_events_clip_ids" in on_clip[0] and "ix_review_events_clip_ids" in undo[0]
    for plan in (*on_clip, *by_actor, undo[0]):
        assert "Anti Join" in plan and "SubPlan" not in plan, plan


def test_progress_panel_finds_merged_clips_through_the_parents_index(db: Database) -> None:
    """The reviewer's recent merge shows the clip it made; the lookup of such children repeats
    the partial index's predicate, so it reads `ix_clips_parent_clip_ids`, not all clips."""
    _, (a, b) = _video(db, [(0, 10), (10, 20)])
    _to_review(db, [a, b])
    states.request_merge(db, b, actor="ann")
    merged = states.complete_merge(db, [a, b])
    (view,) = queries.recent_events(db, "ann")
    assert [c.id for c in view.new_clips] == [merged] and view.status == "pending"
    off = "SET LOCAL enable_seqscan = off"
    plans = _plans(db, lambda: queries.recent_events(db, "ann"), "clips", off)
    assert any("ix_clips_parent_clip_ids" in plan for plan in plans), plans


# --------------------------------------------------------------------------- missing embeddings


def test_missing_embedding_queries_are_anti_joins(db: Database) -> None:
    """`NOT IN (subquery)` turns into a subquery re-run per clip once the embedded ids outgrow
    work_mem (a million clips); NOT EXISTS stays an anti-join at any size."""
    vid, (a, b) = _video(db, [(0, 10), (10, 20)])
    _to_review(db, [a, b])
    states.approve_clip(db, a)
    states.approve_clip(db, b)
    states.store_embedding(db, a, [1.0, 0.0], model_name="m", generation_strategy="s")
    assert embeddings.clips_missing_embedding(db, "m", "s") == [(b, f"{vid}_10_20")]
    assert embeddings.videos_missing_embedding(db, "m", "s") == [vid]
    assert embeddings.clips_missing_embedding(db, "other", "s") == [
        (a, f"{vid}_0_10"),
        (b, f"{vid}_10_20"),
    ]
    small = "SET LOCAL work_mem = '64kB'"
    for call in (
        lambda: embeddings.clips_missing_embedding(db, "m", "s"),
        lambda: embeddings.videos_missing_embedding(db, "m", "s"),
    ):
        (plan,) = _plans(db, call, "clips", small)
        assert "Anti Join" in plan and "SubPlan" not in plan, plan


# --------------------------------------------------------------------------- migration 0004


def _indexes(db: Database, table: str) -> set[str]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": table}
        ).all()
    return {name for (name,) in rows}


def test_migration_0004_applies_and_reverts(fresh_database_url: str) -> None:
    db = Database(fresh_database_url, auto_migrate=False)
    try:
        assert migrate(db.engine, "0003_clips_fillfactor_45") == "0003_clips_fillfactor_45"
        assert not REVIEW_INDEXES & _indexes(db, "review_events")
        assert migrate(db.engine, REVISION) == REVISION
        assert _indexes(db, "review_events") >= REVIEW_INDEXES
        assert "ix_clips_parent_clip_ids" in _indexes(db, "clips")
        with db.engine.connect() as conn:
            defs = conn.scalars(
                text("SELECT indexdef FROM pg_indexes WHERE tablename = 'clips'")
            ).all()
        assert not [d for d in defs if "state" in d]  # transitions stay HOT updates
        cfg = alembic_config(fresh_database_url)
        command.downgrade(cfg, "0003_clips_fillfactor_45")
        assert current_revision(db.engine) == "0003_clips_fillfactor_45"
        assert not REVIEW_INDEXES & _indexes(db, "review_events")
        assert "ix_clips_parent_clip_ids" not in _indexes(db, "clips")
        assert migrate(db.engine, REVISION) == REVISION
    finally:
        db.dispose()
