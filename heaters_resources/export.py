"""`heaters export`: approved clips as a manifest for downstream datasets (JSONL or Parquet).

One row per approved clip (states `approved`, `embedding`, `embedded`, `embedding_failed`: all
were approved by a reviewer): ids, source, frame and time range, storage keys of the clip and
its artifacts, and optionally its embeddings. Rows are read in id order in batches (keyset
pagination), so memory stays flat for any library size, and the file is written to a temporary
name and renamed, so a reader never sees half a manifest.

Parquet needs `pyarrow`, which is optional: without it, ask for JSONL.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import select

from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ClipEmbedding, SourceVideo

Format = Literal["jsonl", "parquet"]
APPROVED_STATES = ("approved", "embedding", "embedded", "embedding_failed")
BATCH = 1000


@dataclass(frozen=True)
class ExportResult:
    path: str
    format: Format
    rows: int


def manifest_rows(
    db: Database,
    *,
    embeddings: bool = False,
    model_name: str | None = None,
    states: Sequence[str] = APPROVED_STATES,
    video_id: int | None = None,
    batch: int = BATCH,
) -> Iterator[dict[str, Any]]:
    """Manifest rows in clip id order, `batch` clips per query round."""
    last = 0
    while True:
        stmt = (
            select(Clip, SourceVideo.source, SourceVideo.title)
            .join(SourceVideo)
            .where(Clip.id > last, Clip.state.in_(list(states)))
            .order_by(Clip.id)
            .limit(batch)
        )
        if video_id is not None:
            stmt = stmt.where(Clip.source_video_id == video_id)
        with db.session() as s:
            rows = s.execute(stmt).all()
            ids = [r.Clip.id for r in rows]
            arts = s.execute(
                select(
                    ClipArtifact.clip_id,
                    ClipArtifact.kind,
                    ClipArtifact.tag,
                    ClipArtifact.storage_key,
                    ClipArtifact.sidecar_key,
                )
                .where(ClipArtifact.clip_id.in_(ids))
                .order_by(ClipArtifact.clip_id, ClipArtifact.id)
            ).all()
            vectors = _embeddings(s, ids, model_name) if embeddings and ids else {}
        if not rows:
            return
        by_clip: dict[int, list[Any]] = {}
        for a in arts:
            by_clip.setdefault(a.clip_id, []).append(a)
        for r in rows:
            yield _row(
                r.Clip,
                r.source,
                r.title,
                by_clip.get(r.Clip.id, []),
                vectors.get(r.Clip.id, []) if embeddings else None,
            )
        last = ids[-1]


def _embeddings(
    session: Any, ids: list[int], model_name: str | None
) -> dict[int, list[dict[str, Any]]]:
    stmt = (
        select(
            ClipEmbedding.clip_id,
            ClipEmbedding.model_name,
            ClipEmbedding.generation_strategy,
            ClipEmbedding.dimension,
            ClipEmbedding.embedding,
        )
        .where(ClipEmbedding.clip_id.in_(ids))
        .order_by(
            ClipEmbedding.clip_id, ClipEmbedding.model_name, ClipEmbedding.generation_strategy
        )
    )
    if model_name:
        stmt = stmt.where(ClipEmbedding.model_name == model_name)
    out: dict[int, list[dict[str, Any]]] = {}
    for cid, model, strategy, dim, vector in session.execute(stmt):
        out.setdefault(cid, []).append(
            {
                "model_name": model,
                "generation_strategy": strategy,
                "dimension": dim,
                "vector": [float(x) for x in vector],
            }
        )
    return out


def _row(
    clip: Clip,
    source: str,
    title: str | None,
    arts: list[Any],
    embeddings: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    sprite = next((a for a in arts if a.kind == "sprite_sheet"), None)
    row: dict[str, Any] = {
        "clip_id": clip.id,
        "identifier": clip.identifier,
        "source_video_id": clip.source_video_id,
        "source": source,
        "title": title,
        "start_frame": clip.start_frame,
        "end_frame": clip.end_frame,
        "start_time": clip.start_time,
        "end_time": clip.end_time,
        "fps": clip.fps,
        "duration": clip.end_time - clip.start_time,
        "state": clip.state,
        "reviewed_at": clip.reviewed_at.isoformat() if clip.reviewed_at else None,
        "parent_clip_ids": list(clip.parent_clip_ids or []),
        "storage_key": clip.storage_key,
        "keyframe_keys": [a.storage_key for a in arts if a.kind == "keyframe"],
        "sprite_key": sprite.storage_key if sprite else None,
        "sprite_metadata_key": sprite.sidecar_key if sprite else None,
    }
    if embeddings is not None:
        row["embeddings"] = embeddings
    return row


def export_manifest(
    db: Database,
    out: str | Path,
    *,
    fmt: Format = "jsonl",
    embeddings: bool = False,
    model_name: str | None = None,
    video_id: int | None = None,
) -> ExportResult:
    """Write the manifest to `out` (`-`: JSONL on stdout); returns where and how many rows."""
    rows = manifest_rows(db, embeddings=embeddings, model_name=model_name, video_id=video_id)
    if fmt == "parquet":
        if str(out) == "-":
            raise ValueError("Parquet cannot go to stdout; give a file name")
        _require_pyarrow()
        return ExportResult(
            str(out), fmt, _atomic(Path(out), lambda f: _parquet(rows, f, embeddings))
        )
    if fmt != "jsonl":
        raise ValueError(f"unknown format {fmt!r}: jsonl or parquet")
    if str(out) == "-":
        return ExportResult("-", fmt, _jsonl(rows, sys.stdout))
    return ExportResult(
        str(out),
        fmt,
        _atomic(Path(out), lambda f: _jsonl(rows, open(f, "w", encoding="utf-8"), close=True)),
    )


def _atomic(target: Path, write: Any) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        count = int(write(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _jsonl(rows: Iterator[dict[str, Any]], stream: IO[str], close: bool = False) -> int:
    count = 0
    try:
        for row in rows:
            stream.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    finally:
        if close:
            stream.close()
        else:
            stream.flush()
    return count


def _require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:  # optional dependency
        raise RuntimeError(
            "Parquet export needs pyarrow (pip install pyarrow); use --format jsonl otherwise"
        ) from exc


def _parquet(rows: Iterator[dict[str, Any]], path: str, embeddings: bool) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        ("clip_id", pa.int64()),
        ("identifier", pa.string()),
        ("source_video_id", pa.int64()),
        ("source", pa.string()),
        ("title", pa.string()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("start_time", pa.float64()),
        ("end_time", pa.float64()),
        ("fps", pa.float64()),
        ("duration", pa.float64()),
        ("state", pa.string()),
        ("reviewed_at", pa.string()),
        ("parent_clip_ids", pa.list_(pa.int64())),
        ("storage_key", pa.string()),
        ("keyframe_keys", pa.list_(pa.string())),
        ("sprite_key", pa.string()),
        ("sprite_metadata_key", pa.string()),
    ]
    if embeddings:
        fields.append(
            (
                "embeddings",
                pa.list_(
                    pa.struct(
                        [
                            ("model_name", pa.string()),
                            ("generation_strategy", pa.string()),
                            ("dimension", pa.int32()),
                            ("vector", pa.list_(pa.float32())),
                        ]
                    )
                ),
            )
        )
    schema = pa.schema(fields)
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= BATCH:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count, chunk = count + len(chunk), []
        if chunk or count == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            count += len(chunk)
    return count
