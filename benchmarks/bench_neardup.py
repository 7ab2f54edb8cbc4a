"""Benchmark: near-duplicates over N stored clips in one set-based pass.

On the embedded PostgreSQL in a temporary HEATERS_HOME: N clips made through the state module
(``create_clips_from_splice``, videos of ``--clips-per-video``), N unit vectors of ``--dim``
stored by binary COPY into clip_embeddings (as bench_pgvector does), in clusters of
``--cluster-size`` (within-cluster cosine ~0.8, like related clips; 1 = uniform random vectors)
plus ``--planted`` near-duplicate pairs at cosine distance 0.001-0.02 (half of them within one
video). Then ``duplicates.find_near_duplicates(db, 0.05, ...)`` as ``heaters near-duplicates``
runs it, with its recall@10 against exact search on ``--check-recall`` sampled clips, and one
incremental run over the last ``--incremental`` clips (``since_clip_id``).

Prints one JSON line: n, dim, engine, seconds (load / index / tune / search / pairs / recall /
total), params (nlist, nprobe), recall@10, planted pairs found, the incremental run, peak
memory (``maxrss_mb``) and the load average before / after (wall-clock times on whatever else
the machine runs). ``--loaders`` also times three ways of reading the space out of Postgres:
binary COPY (what the code uses), ``embedding::text`` through a server-side cursor, and the
pgvector psycopg2 adapter. Figures in the README come from::

    .venv/bin/python benchmarks/bench_neardup.py --n 100000 --loaders
    .venv/bin/python benchmarks/bench_neardup.py --n 1000000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from heaters_resources import states as st
from heaters_resources.db.embedded_pg import ensure_server, stop_server
from heaters_resources.db.engine import Database, migrate
from heaters_resources.search import duplicates, vectors
from heaters_resources.store import keys

MODEL = "bench/random"
STRATEGY = "keyframe_multi_avg"
SPREAD = 0.5  # within-cluster noise, times 1/sqrt(dim): within-cluster cosine ~0.8
COPY_ROWS = 50_000


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def make_clips(db: Database, n: int, per_video: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        count = min(per_video, n - len(ids))
        vid = st.create_source_video(db, f"bench://{len(ids)}")
        st.start_downloading(db, vid)
        st.complete_downloading(
            db, vid, original_key=keys.source_original_key(vid, "mp4"), fps=25.0
        )
        st.start_splicing(db, vid)
        ids += st.create_clips_from_splice(
            db, vid, [st.ClipSpec(i * 10, i * 10 + 10) for i in range(count)]
        )
    return ids


def make_vectors(
    rng: np.random.Generator, n: int, dim: int, cluster: int, planted: int, per_video: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Clustered unit vectors with ``planted`` near-duplicate pairs (row indexes)."""
    out = np.empty((n, dim), dtype=np.float32)
    centres = None
    if cluster > 1:
        centres = rng.standard_normal((max(1, n // cluster), dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for s in range(0, n, 100_000):
        part = rng.standard_normal((min(100_000, n - s), dim), dtype=np.float32)
        if centres is not None:
            part = centres[rng.integers(0, len(centres), len(part))] + SPREAD / np.sqrt(dim) * part
        out[s : s + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
    pairs: list[tuple[int, int]] = []
    rows = rng.choice(n, 2 * planted, replace=False)
    used = {int(r) for r in rows}
    for i in range(planted):
        a, b = int(rows[2 * i]), int(rows[2 * i + 1])
        if i % 2 == 0:  # same video: the clip after a (rows fill videos in order)
            b = a + 1 if (a + 1) % per_video and a + 1 < n else a - 1
            if b in used:
                continue
            used.add(b)
        d = rng.uniform(0.001, 0.02)
        u = rng.standard_normal(dim)
        v = out[a].astype(np.float64)
        u -= (u @ v) * v
        u /= np.linalg.norm(u)
        out[b] = ((1 - d) * v + np.sqrt(1 - (1 - d) ** 2) * u).astype(np.float32)
        pairs.append((min(a, b), max(a, b)))
    return out, pairs


def copy_vectors(db: Database, clip_ids: list[int], vecs: np.ndarray) -> None:
    """Binary COPY (pgvector's binary format: int16 dim, int16 0, float4 big-endian), in
    chunks so the buffer stays small."""
    dim = vecs.shape[1]
    model, strategy = MODEL.encode(), STRATEGY.encode()
    head = struct.pack(
        f"!hiq i{len(model)}s i{len(strategy)}s ii ihh",
        5, 8, 0, len(model), model, len(strategy), strategy, 4, dim, 4 + 4 * dim, dim, 0,
    )  # fmt: skip
    raw = db.engine.raw_connection()
    try:
        for s in range(0, len(clip_ids), COPY_ROWS):
            buf = io.BytesIO()
            buf.write(b"PGCOPY\n\xff\r\n\0" + struct.pack("!ii", 0, 0))
            body = vecs[s : s + COPY_ROWS].astype(">f4").tobytes()
            row = 4 * dim
            for i, cid in enumerate(clip_ids[s : s + COPY_ROWS]):
                buf.write(head[:6] + struct.pack("!q", cid) + head[14:])
                buf.write(body[i * row : (i + 1) * row])
            buf.write(struct.pack("!h", -1))
            buf.seek(0)
            cur: Any = raw.cursor()
            cur.copy_expert(
                "COPY clip_embeddings (clip_id, model_name, generation_strategy, "
                "dimension, embedding) FROM STDIN WITH (FORMAT binary)",
                buf,
            )
            cur.close()
            raw.commit()
    finally:
        raw.close()


def time_loaders(db: Database, dim: int) -> dict[str, float]:
    """Seconds to read the whole space into an (n, dim) float32 array, three ways."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    space = vectors.load_space(db, MODEL, STRATEGY, dim)
    out["binary_copy"] = time.perf_counter() - t0
    sql, params = vectors.space_query(MODEL, STRATEGY, dim)
    for name in ("text", "pgvector_adapter"):
        raw = db.engine.raw_connection()
        conn: Any = raw.driver_connection
        try:
            t0 = time.perf_counter()
            if name == "pgvector_adapter":
                from pgvector.psycopg2 import register_vector

                register_vector(conn)
                query = sql
            else:
                query = sql.replace("e.embedding FROM", "e.embedding::text FROM")
            cur = conn.cursor(name=f"bench_{name}")
            cur.itersize = 10_000
            cur.execute(query, params)
            ids: list[int] = []
            parts: list[np.ndarray] = []
            while batch := cur.fetchmany(10_000):
                ids.extend(r[0] for r in batch)
                if name == "text":
                    flat = ",".join(r[1][1:-1] for r in batch)
                    parts.append(np.fromstring(flat, dtype=np.float32, sep=",").reshape(-1, dim))
                else:
                    parts.append(np.stack([r[1].to_numpy() for r in batch]).astype(np.float32))
            cur.close()
            got = np.concatenate(parts)
            out[name] = time.perf_counter() - t0
            assert got.shape == space.vectors.shape and len(ids) == len(space.ids)
        finally:
            raw.rollback()
            raw.close()
    return {k: round(v, 2) for k, v in out.items()}


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    server = ensure_server(home)
    db = Database(server.url, auto_migrate=False)
    migrate(db.engine)
    with db.engine.begin() as conn:  # building only
        conn.execute(text("ALTER DATABASE postgres SET synchronous_commit = off"))
    t0 = time.perf_counter()
    ids = make_clips(db, args.n, args.clips_per_video)
    t_clips = time.perf_counter() - t0
    vecs, planted = make_vectors(
        rng, args.n, args.dim, args.cluster_size, args.planted, args.clips_per_video
    )
    t0 = time.perf_counter()
    copy_vectors(db, ids, vecs)
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE clip_embeddings; ANALYZE clips"))
    t_copy = time.perf_counter() - t0
    del vecs
    print(f"{args.n} clips in {t_clips:.1f} s, vectors copied in {t_copy:.1f} s", flush=True)
    db.engine.dispose()
    out: dict[str, Any] = {"build_seconds": {"clips": round(t_clips, 1), "copy": round(t_copy, 1)}}
    if args.loaders:
        out["loaders_seconds"] = time_loaders(db, args.dim)
        print(f"loaders: {out['loaders_seconds']}", flush=True)
    out["loadavg_before"] = _loadavg()
    found = duplicates.find_near_duplicates(
        db,
        0.05,
        MODEL,
        STRATEGY,
        per_clip=10,
        limit=10 * args.planted + 1000,
        engine=args.engine,
        index=args.index,
        check_recall=args.check_recall,
    )
    out["loadavg_after"] = _loadavg()
    want = {(min(ids[a], ids[b]), max(ids[a], ids[b])) for a, b in planted}
    got = {(p.a.clip_id, p.b.clip_id) for p in found.pairs}
    out.update(found.summary())
    out.update(
        planted=len(want),
        planted_found=len(want & got),
        pairs=len(found.pairs),
        same_video_pairs=sum(p.a.source_video_id == p.b.source_video_id for p in found.pairs),
    )
    if args.incremental:
        since = ids[-args.incremental - 1]
        inc = duplicates.find_near_duplicates(
            db, 0.05, MODEL, STRATEGY, engine=args.engine, since_clip_id=since
        )
        new = set(ids[-args.incremental :])
        with_new = {p for p in want if new & set(p)}
        out["incremental"] = {
            "new_clips": args.incremental,
            "engine": inc.engine,
            "pairs": len(inc.pairs),
            "planted_found": len(with_new & {(p.a.clip_id, p.b.clip_id) for p in inc.pairs}),
            "planted_with_new": len(with_new),
            "seconds": inc.summary()["seconds"],
        }
    db.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="clips (and vectors)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--cluster-size", type=int, default=50, help="1 = uniform random")
    parser.add_argument("--planted", type=int, default=None, help="pairs (default n / 1000)")
    parser.add_argument("--clips-per-video", type=int, default=10_000)
    parser.add_argument("--check-recall", type=int, default=1000, help="sampled clips")
    parser.add_argument("--incremental", type=int, default=1000, help="new clips (0: skip)")
    parser.add_argument("--engine", default="auto", choices=("auto", "faiss", "exact"))
    parser.add_argument("--index", default="auto", choices=("auto", "flat", "ivf"))
    parser.add_argument("--loaders", action="store_true", help="also time three loaders")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.planted = max(2, args.n // 1000) if args.planted is None else args.planted
    with tempfile.TemporaryDirectory(prefix="heaters-bench-neardup-") as tmp:
        try:
            out = run(args, Path(tmp))
        finally:
            stop_server(Path(tmp))
    result = {
        "n": args.n,
        "dim": args.dim,
        "cluster_size": args.cluster_size,
        "cpus": os.cpu_count(),
        **out,
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
