"""Every vector of one embedding space, streamed out of Postgres into one float32 matrix.

Why a binary COPY and not a cursor: a set-based pass over a million clips needs the vectors
as one ``(n, dim)`` array, and any per-row Python object (a list of floats from pgvector's
adapter, a text literal to parse) costs more than the rest of the load. ``COPY ... TO STDOUT
(FORMAT binary)`` sends each row as ``int16 fields, int32 len, int64 clip_id, int32 len,
int16 dim, int16 unused, float4[dim]`` (big-endian; pgvector's ``vector_send``), i.e. rows of
one fixed size for one dimension, so a batch of rows is a NumPy structured view of the bytes
received. The count and the COPY run in one REPEATABLE READ transaction, so the matrix is
allocated once at its final size (memory: ``n * dim * 4`` bytes, plus one batch of bytes).
``benchmarks/bench_neardup.py --loaders`` measures this against ``embedding::text`` and the
pgvector adapter.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heaters_resources.db.engine import Database

SIGNATURE = b"PGCOPY\n\xff\r\n\0"
BATCH_BYTES = 32 * 1024 * 1024  # bytes parsed at a time: bounds the extra memory of the load


@dataclass
class SpaceVectors:
    """The live clips of one (model, strategy) space: ``ids[i]`` is the clip of row ``i`` of
    ``vectors`` (unit length, float32; zero vectors are left out: they have no direction)."""

    ids: np.ndarray  # int64, (n,)
    vectors: np.ndarray  # float32, (n, dim), rows of norm 1
    dimension: int
    seconds: float = 0.0
    dropped_zero: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def row_dtype(dim: int) -> np.dtype[Any]:
    """One binary COPY row of (clip_id bigint, embedding vector(dim))."""
    return np.dtype(
        [
            ("fields", ">i2"),
            ("id_len", ">i4"),
            ("id", ">i8"),
            ("vec_len", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("vec", ">f4", (dim,)),
        ]
    )


class _CopySink:
    """The file object psycopg2 writes the COPY stream into: whole rows go straight into the
    preallocated arrays, a batch at a time; only a partial row stays behind in ``pending``."""

    def __init__(self, count: int, dim: int) -> None:
        self.dtype = row_dtype(dim)
        self.dim = dim
        self.ids = np.empty(count, dtype=np.int64)
        self.vectors = np.empty((count, dim), dtype=np.float32)
        self.filled = 0
        self.pending = bytearray()
        self.header_done = False
        self.finished = False

    def write(self, data: bytes | memoryview) -> int:
        self.pending += data
        if len(self.pending) >= BATCH_BYTES:
            self._drain()
        return len(data)

    def _header(self) -> bool:
        if len(self.pending) < 19:
            return False
        if bytes(self.pending[:11]) != SIGNATURE:
            raise ValueError("not a binary COPY stream")
        (ext_len,) = struct.unpack("!i", self.pending[15:19])
        if len(self.pending) < 19 + ext_len:
            return False
        del self.pending[: 19 + ext_len]
        self.header_done = True
        return True

    def _drain(self) -> None:
        if not self.header_done and not self._header():
            return
        size = self.dtype.itemsize
        rows = min(len(self.pending) // size, len(self.ids) - self.filled)
        if rows:
            batch = np.frombuffer(self.pending, dtype=self.dtype, count=rows)
            if (
                (batch["fields"] != 2).any()
                or (batch["id_len"] != 8).any()
                or (batch["vec_len"] != 4 + 4 * self.dim).any()
                or (batch["dim"] != self.dim).any()
            ):
                raise ValueError(f"unexpected row in the COPY stream (want {self.dim}-d vectors)")
            end = self.filled + rows
            self.ids[self.filled : end] = batch["id"]
            self.vectors[self.filled : end] = batch["vec"]
            self.filled = end
            del batch
            del self.pending[: rows * size]

    def close(self) -> None:
        self._drain()
        if self.filled != len(self.ids) or bytes(self.pending) != b"\xff\xff":
            raise ValueError(
                f"COPY stream ended after {self.filled} of {len(self.ids)} rows "
                f"({len(self.pending)} bytes left)"
            )


def space_query(model_name: str, strategy: str, dim: int) -> tuple[str, dict[str, Any]]:
    """The live (non-superseded) clips' vectors of one space; no ORDER BY (the ids travel
    with the rows, and sorting a million 2 KB rows would spill to disk)."""
    return (
        "SELECT e.clip_id, e.embedding FROM clip_embeddings e "
        "JOIN clips c ON c.id = e.clip_id "
        "WHERE e.model_name = %(model)s AND e.generation_strategy = %(strategy)s "
        "AND e.dimension = %(dim)s AND e.embedding IS NOT NULL AND c.superseded_at IS NULL",
        {"model": model_name, "strategy": strategy, "dim": int(dim)},
    )


def load_space(db: Database, model_name: str, strategy: str, dim: int) -> SpaceVectors:
    """The space's vectors in one binary COPY, normalized in place (cosine = dot product)."""
    t0 = time.perf_counter()
    sql, params = space_query(model_name, strategy, dim)
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute(f"SELECT count(*) FROM ({sql}) AS space", params)
            (count,) = cur.fetchone() or (0,)
            sink = _CopySink(int(count), dim)
            copy = cur.mogrify(sql, params).decode()
            cur.copy_expert(f"COPY ({copy}) TO STDOUT WITH (FORMAT binary)", sink)
            sink.close()
        finally:
            cur.close()
            raw.rollback()
    finally:
        raw.close()
    ids, vectors = sink.ids, sink.vectors
    dropped = normalize_rows(vectors)
    if dropped:
        keep = np.linalg.norm(vectors, axis=1) > 0
        ids, vectors = ids[keep], vectors[keep]
    return SpaceVectors(ids, vectors, dim, time.perf_counter() - t0, dropped)


def normalize_rows(vectors: np.ndarray, block: int = 65_536) -> int:
    """Scale every row to unit length in place, a block at a time (no full-size temporary);
    returns how many rows are zero (they stay zero)."""
    zero = 0
    for start in range(0, len(vectors), block):
        part = vectors[start : start + block]
        norms = np.sqrt(np.einsum("ij,ij->i", part, part, dtype=np.float64)).astype(np.float32)
        bad = norms == 0
        zero += int(bad.sum())
        norms[bad] = 1.0
        part /= norms[:, None]
    return zero
