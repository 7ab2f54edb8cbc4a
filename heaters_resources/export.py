"""`heaters export`: approved clips as a manifest for downstream datasets (JSONL or Parquet).

One row per approved clip (states `approved`, `embedding`, `embedded`, `embedding_failed`: all
were approved by a reviewer): ids, source, frame and time range, storage keys of the clip and
its artifacts, and optionally its embeddings. ``storage_key`` is null for a clip approved but
not cut yet (HEATERS_CLIPS=proxy: its embedding run cuts it). Rows are read in id order in
batches (keyset pagination), so memory stays flat for any library size, and the file is
written to a temporary name and renamed, so a reader never sees half a manifest.

Parquet needs `pyarrow`, which is optional: without it, ask for JSONL. The format comes from
`--format` or the file's extension (`.jsonl`/`.ndjson`, `.parquet`); any other extension
(`.csv`, `.json`, none) is refused rather than guessed, so a file never holds something other
than its name says. CSV is not offered: rows carry lists (keyframe keys, embeddings).
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

from sqlalchemy import ARRAY, Select, Text, bindparam, func, select, true, type_coerce
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.types import NullType

from heaters_media.errors import InvalidInputError
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ClipEmbedding, SourceVideo

Format = Literal["jsonl", "parquet"]
FORMATS: dict[str, Format] = {"jsonl": "jsonl", "parquet": "parquet"}
EXTENSIONS: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
APPROVED_STATES = ("approved", "embedding", "embedded", "embedding_failed")
BATCH = 1000
# psycopg2 already returns arrays as lists: SQLAlchemy's per-item ARRAY processing of them was
# a fifth of the export's time.
_AS_FETCHED = NullType()
# One encoder for every row: `json.dumps` with arguments builds a new encoder per call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


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
    clip_ids: Sequence[int] | None = None,
    batch: int = BATCH,
) -> Iterator[dict[str, Any]]:
    """Manifest rows in clip id order, `batch` clips per query round (only `clip_ids` when
    given: a selection made on the library page).

    One query a round returns every field of a row, the artifacts' keys aggregated per clip in
    SQL, as plain tuples: at a million rows ORM objects and a second artifacts query per round
    were most of the export's time. Each round is its own short transaction (keyset on the
    primary key), so an export of any size holds no snapshot that would keep vacuum or HOT
    pruning of the clips table waiting.
    """
    stmt = _manifest_select(list(states), video_id, batch, clip_ids)
    last = 0
    while True:
        with db.engine.connect() as conn:
            rows = conn.execute(stmt, {"after": last}).all()
            vectors = (
                _embeddings(conn, [r[0] for r in rows], model_name) if embeddings and rows else {}
            )
        if not rows:
            return
        for (
            clip_id,
            identifier,
            source_video_id,
            source,
            title,
            start_frame,
            end_frame,
            start_time,
            end_time,
            fps,
            state,
            reviewed_at,
            parent_clip_ids,
            storage_key,
            keyframe_keys,
            sprite_key,
            sprite_metadata_key,
        ) in rows:
            row: dict[str, Any] = {
                "clip_id": clip_id,
                "identifier": identifier,
                "source_video_id": source_video_id,
                "source": source,
                "title": title,
                "start_frame": start_frame,
                "end_frame": end_frame,
                "start_time": start_time,
                "end_time": end_time,
                "fps": fps,
                "duration": end_time - start_time,
                "state": state,
                "reviewed_at": reviewed_at.isoformat() if reviewed_at else None,
                "parent_clip_ids": parent_clip_ids or [],
                "storage_key": storage_key,
                "keyframe_keys": keyframe_keys or [],
                "sprite_key": sprite_key,
                "sprite_metadata_key": sprite_metadata_key,
            }
            if embeddings:
                row["embeddings"] = vectors.get(clip_id, [])
            yield row
        last = rows[-1][0]


def _manifest_select(
    states: list[str], video_id: int | None, batch: int, clip_ids: Sequence[int] | None = None
) -> Select[*tuple[Any, ...]]:
    """The clips after `:after` in id order with their video and artifact keys.

    Keyframe keys in artifact id order; the sprite is the clip's first sprite sheet by id. The
    artifacts come from a LATERAL aggregate over `ix_clip_artifacts_clip_id`, a few index
    entries per clip.
    """
    a = ClipArtifact

    def keys(column: Any, kind: str) -> Any:
        agg = func.array_agg(aggregate_order_by(column, a.id)).filter(a.kind == kind)
        return type_coerce(agg, ARRAY(Text))

    art = (
        select(
            type_coerce(keys(a.storage_key, "keyframe"), _AS_FETCHED).label("keyframe_keys"),
            keys(a.storage_key, "sprite_sheet")[1].label("sprite_key"),
            keys(a.sidecar_key, "sprite_sheet")[1].label("sprite_metadata_key"),
        )
        .where(a.clip_id == Clip.id)
        .lateral("art")
    )
    stmt = (
        select(
            Clip.id,
            Clip.identifier,
            Clip.source_video_id,
            SourceVideo.source,
            SourceVideo.title,
            Clip.start_frame,
            Clip.end_frame,
            Clip.start_time,
            Clip.end_time,
            Clip.fps,
            Clip.state,
            Clip.reviewed_at,
            type_coerce(Clip.parent_clip_ids, _AS_FETCHED),
            Clip.storage_key,
            art.c.keyframe_keys,
            art.c.sprite_key,
            art.c.sprite_metadata_key,
        )
        .join(SourceVideo, SourceVideo.id == Clip.source_video_id)
        .join(art, true(), isouter=True)
        .where(Clip.id > bindparam("after"), Clip.state.in_(states))
        .order_by(Clip.id)
        .limit(batch)
    )
    if video_id is not None:
        stmt = stmt.where(Clip.source_video_id == video_id)
    if clip_ids is not None:
        stmt = stmt.where(Clip.id.in_(list(clip_ids)))
    return stmt


def _embeddings(
    conn: Any, ids: list[int], model_name: str | None
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
    for cid, model, strategy, dim, vector in conn.execute(stmt):
        out.setdefault(cid, []).append(
            {
                "model_name": model,
                "generation_strategy": strategy,
                "dimension": dim,
                "vector": [float(x) for x in vector],
            }
        )
    return out


def manifest_format(out: str | Path, fmt: str | None = None) -> Format:
    """The format to write `out` in: `fmt` when given, else from the extension (`-`: JSONL).

    An unknown `fmt` or extension is an InvalidInputError naming the choices: `x.csv` written
    as JSONL would be a file that lies about its contents.
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise InvalidInputError(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
        return FORMATS[fmt]
    if str(out) == "-":
        return "jsonl"
    suffix = Path(out).suffix.lower()
    if suffix not in EXTENSIONS:
        raise InvalidInputError(
            f"cannot tell the format of {str(out)[:200]!r} from its extension "
            f"{suffix or '(none)'!r}: name it {', '.join(EXTENSIONS)} "
            "or pass --format jsonl|parquet"
        )
    return EXTENSIONS[suffix]


def check_target(out: str | Path) -> None:
    """Refuse a target that cannot become a file, before any query runs."""
    if str(out) == "-":
        return
    target = Path(out)
    try:
        if not str(out) or target.is_dir():
            raise InvalidInputError(f"export target is a folder, not a file: {str(out)[:200]}")
        parent = target.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        below_file = not parent.is_dir()
    except OSError as exc:  # a name too long, a loop of links
        raise InvalidInputError(f"cannot write {str(out)[:200]}: {exc.strerror or exc}") from exc
    if below_file:
        raise InvalidInputError(f"export target is below a file, not a folder: {parent}")


def export_manifest(
    db: Database,
    out: str | Path,
    *,
    fmt: Format = "jsonl",
    embeddings: bool = False,
    model_name: str | None = None,
    video_id: int | None = None,
    clip_ids: Sequence[int] | None = None,
) -> ExportResult:
    """Write the manifest to `out` (`-`: JSONL on stdout); returns where and how many rows.

    A target that cannot be written (a folder, below a file, no permission) is an
    InvalidInputError, not an OSError from deep inside the writer."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}: use {' or '.join(FORMATS)}")
    check_target(out)
    rows = manifest_rows(
        db, embeddings=embeddings, model_name=model_name, video_id=video_id, clip_ids=clip_ids
    )
    if str(out) == "-":
        if fmt == "parquet":
            raise InvalidInputError("Parquet cannot go to stdout; give a file name")
        return ExportResult("-", fmt, _jsonl(rows, sys.stdout))
    if fmt == "parquet":
        _require_pyarrow()
    try:
        if fmt == "parquet":
            count = _atomic(Path(out), lambda f: _parquet(rows, f, embeddings))
        else:
            count = _atomic(Path(out), lambda f: _jsonl_file(rows, f))
    except OSError as exc:
        raise InvalidInputError(f"cannot write {str(out)[:200]}: {exc.strerror or exc}") from exc
    return ExportResult(str(out), fmt, count)


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


def _jsonl(rows: Iterator[dict[str, Any]], stream: IO[str]) -> int:
    count, write = 0, stream.write
    try:
        for row in rows:
            write(_ENCODE(row) + "\n")
            count += 1
    finally:
        stream.flush()
    return count


def _jsonl_file(rows: Iterator[dict[str, Any]], path: str) -> int:
    with open(path, "w", encoding="utf-8") as stream:
        return _jsonl(rows, stream)


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
