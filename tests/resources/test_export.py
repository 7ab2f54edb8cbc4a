"""`heaters export`: approved clips as a JSONL (or Parquet, when pyarrow is installed) manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heaters_resources import export, states
from heaters_resources.db.embedded_pg import EmbeddedServer
from heaters_resources.db.engine import Database
from heaters_resources.store.objects import LocalObjectStore
from tests.review.test_review_app import make_clips


def _library(db: Database, store: LocalObjectStore) -> list[int]:
    ids = make_clips(db, store, spans=((0, 50), (50, 100), (100, 150), (150, 200)))
    states.approve_clip(db, ids[0])
    states.approve_clip(db, ids[2])
    states.start_embedding(db, ids[2])
    states.complete_embedding(
        db, ids[2], [0.6, 0.8], model_name="test/m", generation_strategy="mid"
    )
    states.store_embedding(db, ids[0], [1.0, 0.0], model_name="other/m", generation_strategy="mid")
    states.skip_clip(db, ids[1])
    return ids


def test_jsonl_manifest_of_approved_clips(
    db: Database, local_store: LocalObjectStore, tmp_path: Path
) -> None:
    ids = _library(db, local_store)
    out = tmp_path / "out" / "manifest.jsonl"
    result = export.export_manifest(db, out, embeddings=True, model_name="test/m")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.rows == 2 and [r["clip_id"] for r in rows] == [ids[0], ids[2]]
    first, second = rows
    assert first["identifier"] == "1_0_50" and first["state"] == "approved"
    assert first["source"] == "/videos/Test video.mp4" and first["title"] == "Test video"
    assert (first["start_frame"], first["end_frame"], first["fps"]) == (0, 50, 25.0)
    assert first["start_time"] == 0.0 and first["end_time"] == 2.0 and first["duration"] == 2.0
    assert first["storage_key"] == "clips/1/1_0_50.mp4"
    assert first["keyframe_keys"] == ["clips/1/1_0_50/keyframes/multi_50.jpg"]
    assert first["sprite_key"] == "clips/1/1_0_50/sprite/w48.jpg"
    assert first["reviewed_at"] and first["embeddings"] == []  # other model filtered out
    assert second["state"] == "embedded"
    assert second["embeddings"] == [
        {
            "model_name": "test/m",
            "generation_strategy": "mid",
            "dimension": 2,
            "vector": pytest.approx([0.6, 0.8]),
        }
    ]
    plain = export.export_manifest(db, tmp_path / "plain.jsonl")
    assert "embeddings" not in json.loads((tmp_path / "plain.jsonl").read_text().split("\n")[0])
    assert plain.rows == 2
    assert not list(tmp_path.glob("out/.manifest*"))  # the temporary file was renamed


def test_small_batches_page_through_everything(db: Database, local_store: LocalObjectStore) -> None:
    ids = make_clips(db, local_store, spans=tuple((i * 10, i * 10 + 10) for i in range(7)))
    for cid in ids:
        states.approve_clip(db, cid)
    rows = list(export.manifest_rows(db, batch=3))
    assert [r["clip_id"] for r in rows] == ids
    assert list(export.manifest_rows(db, video_id=999)) == []


def test_parquet_manifest(db: Database, local_store: LocalObjectStore, tmp_path: Path) -> None:
    """pyarrow is in the `export` extra (and so in `dev`): this runs in CI, it is never skipped."""
    import pyarrow.parquet as pq

    _library(db, local_store)
    target = tmp_path / "manifest.parquet"
    result = export.export_manifest(db, target, fmt="parquet", embeddings=True)
    table = pq.read_table(target)
    assert result.rows == table.num_rows == 2
    assert table.column("identifier").to_pylist() == ["1_0_50", "1_100_150"]
    jsonl = [json.loads(line) for line in _jsonl_lines(db, tmp_path, embeddings=True)]
    parquet_rows = table.to_pylist()
    assert len(parquet_rows) == len(jsonl) == 2
    for got, want in zip(parquet_rows, jsonl, strict=True):
        assert {k: v for k, v in got.items() if k != "embeddings"} == {
            k: want.get(k) for k in got if k != "embeddings"
        }, "Parquet and JSONL manifests must carry the same fields"
        # Parquet stores vectors as float32 (half the size); same vectors to float32 precision.
        assert [(e["model_name"], e["dimension"]) for e in got["embeddings"]] == [
            (e["model_name"], e["dimension"]) for e in want["embeddings"]
        ]
        for g, w in zip(got["embeddings"], want["embeddings"], strict=True):
            assert g["vector"] == pytest.approx(w["vector"], rel=1e-6)


def test_parquet_without_pyarrow_is_a_clear_error(
    db: Database, local_store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _library(db, local_store)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import now raises ImportError
    target = tmp_path / "manifest.parquet"
    with pytest.raises(RuntimeError, match="pyarrow"):
        export.export_manifest(db, target, fmt="parquet")
    assert not target.exists() and not list(tmp_path.glob(".manifest*"))


def _jsonl_lines(db: Database, tmp_path: Path, *, embeddings: bool) -> list[str]:
    out = tmp_path / "manifest.jsonl"
    export.export_manifest(db, out, fmt="jsonl", embeddings=embeddings)
    return out.read_text().splitlines()


def test_export_command(
    db: Database,
    local_store: LocalObjectStore,
    pg_server: EmbeddedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from heaters_resources.cli.main import app

    _library(db, local_store)
    monkeypatch.setenv("HEATERS_DATABASE_URL", pg_server.url)
    monkeypatch.setenv("HEATERS_HOME", str(tmp_path / "home"))
    out = tmp_path / "approved.jsonl"
    result = CliRunner().invoke(app, ["export", str(out), "--embeddings"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["rows"] == 2
    assert len(out.read_text().splitlines()) == 2
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "x.csv"), "--format", "csv"])
    assert bad.exit_code != 0
