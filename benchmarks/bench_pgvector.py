"""Benchmark: top-10 cosine queries over N stored vectors, with and without the HNSW index.

On the embedded PostgreSQL in a temporary HEATERS_HOME: N clips (state module, bulk), N unit
vectors in clusters of 50 (binary COPY into clip_embeddings), the model's partial HNSW index
built by `search.ensure_hnsw_index` (timed), then `similarity` queries as the review page runs them
(join with clips, superseded clips filtered) — mean / p95 latency with the index, the same with
the index dropped (exact sequential scan, the reference), their ratio, and recall@10 of HNSW
against the exact answers, for two kinds of query:

- ``near``: stored vectors plus a little noise, so each has its own vector and true near
  neighbours among the data ("clips similar to this clip");
- ``fresh``: new vectors drawn from the data's distribution (a random cluster centre of the
  data plus the data's own spread; uniform when --cluster-size is 1) and not stored
  ("clips similar to a new embedding").

Recall is reported for ef_search 100 (what `similarity` sets) and 40 (pgvector's default).
``--index-kind``: the index over ``embedding::halfvec(dim)`` (the default for new models: 2-byte
floats), ``vector`` (4-byte, the initial migration's kind) or ``both`` (one after the other on the
same data, each with its size on disk, build time, latency and recall). The README figures::

    .venv/bin/python benchmarks/bench_pgvector.py --index-kind both   # --n 100000 --dim 512

``--json`` adds one JSON line of results.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from heaters_resources import search
from heaters_resources import states as st
from heaters_resources.db.embedded_pg import ensure_server, stop_server
from heaters_resources.db.engine import Database, migrate
from heaters_resources.store import keys

MODEL = "bench/random"
STRATEGY = "keyframe_multi_avg"


def _clips(db: Database, n: int) -> list[int]:
    vid = st.create_source_video(db, "bench")
    st.start_downloading(db, vid)
    st.complete_downloading(
        db, vid, original_key=keys.source_original_key(vid, "mp4"), fps=25.0, frame_count=n * 10
    )
    st.start_splicing(db, vid)
    return st.create_clips_from_splice(
        db, vid, [st.ClipSpec(i * 10, i * 10 + 10) for i in range(n)]
    )


def _copy_vectors(db: Database, clip_ids: list[int], vectors: np.ndarray) -> None:
    """Binary COPY (pgvector's binary format: int16 dim, int16 0, float4 big-endian)."""
    dim = vectors.shape[1]
    model, strategy = MODEL.encode(), STRATEGY.encode()
    buf = io.BytesIO()
    buf.write(b"PGCOPY\n\xff\r\n\0" + struct.pack("!ii", 0, 0))
    head = struct.pack(
        f"!hiq i{len(model)}s i{len(strategy)}s ii ihh",
        5,
        8,
        0,
        len(model),
        model,
        len(strategy),
        strategy,
        4,
        dim,
        4 + 4 * dim,
        dim,
        0,
    )
    body = vectors.astype(">f4").tobytes()
    row = 4 * dim
    for i, cid in enumerate(clip_ids):
        buf.write(head[:6] + struct.pack("!q", cid) + head[14:])
        buf.write(body[i * row : (i + 1) * row])
    buf.write(struct.pack("!h", -1))
    buf.seek(0)
    raw = db.engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.copy_expert(
                "COPY clip_embeddings (clip_id, model_name, generation_strategy, "
                "dimension, embedding) FROM STDIN WITH (FORMAT binary)",
                buf,
            )
        raw.commit()
    finally:
        raw.close()


def _time_queries(db: Database, queries: np.ndarray, k: int) -> tuple[list[float], list[list[int]]]:
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        rows = search.nearest_clips(
            db, q.tolist(), limit=k, model_name=MODEL, generation_strategy=STRATEGY
        )
        times.append(time.perf_counter() - t0)
        results.append([r.clip_id for r in rows])
    return times, results


def _plan(db: Database, q: np.ndarray, dim: int, kind: str = "vector") -> str:
    vec = "[" + ",".join(f"{x:.6f}" for x in q) + "]"
    with db.session() as s:
        rows = (
            s.execute(
                text(
                    "EXPLAIN SELECT clips.id FROM clip_embeddings "
                    "JOIN clips ON clips.id = clip_id "
                    f"WHERE model_name = '{MODEL}' AND generation_strategy = '{STRATEGY}' "
                    f"AND clips.superseded_at IS NULL "
                    f"ORDER BY embedding::{kind}({dim}) <=> '{vec}' LIMIT 10"
                )
            )
            .scalars()
            .all()
        )
    uses = [r.strip() for r in rows if "Index Scan" in r and "hnsw" in r]
    return uses[0] if uses else "sequential scan (no HNSW index in the plan)"


SPREAD = 0.5  # within-cluster noise, times 1/sqrt(dim): within-cluster cosine ~0.8


def _clustered(
    rng: np.random.Generator, n: int, dim: int, size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit vectors around n/size random centres (within-cluster cosine ~0.8), like embeddings
    of related clips, and the centres. size 1: uniform random vectors (no neighbours worth the
    name) and no centres."""
    noise = rng.standard_normal((n, dim), dtype=np.float32)
    centres = None
    if size > 1:
        centres = rng.standard_normal((max(1, n // size), dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        noise = centres[rng.integers(0, len(centres), n)] + SPREAD / np.sqrt(dim) * noise
    return (noise / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32), centres


def _fresh(
    rng: np.random.Generator, centres: np.ndarray | None, count: int, dim: int
) -> np.ndarray:
    """``count`` new vectors from the data's distribution (same centres, same spread)."""
    noise = rng.standard_normal((count, dim), dtype=np.float32)
    if centres is not None:
        noise = centres[rng.integers(0, len(centres), count)] + SPREAD / np.sqrt(dim) * noise
    return (noise / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32)


def _stats(times: list[float]) -> tuple[float, float]:
    ms = sorted(t * 1000 for t in times)
    return statistics.fmean(ms), ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]


def _recall(got: list[list[int]], exact: list[list[int]]) -> float:
    return statistics.fmean(len(set(g) & set(e)) / len(e) for g, e in zip(got, exact, strict=True))


QUERY_KINDS = ("near", "fresh")


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="stored vectors (and clips)")
    parser.add_argument("--dim", type=int, default=512, help="vector dimension")
    parser.add_argument("--queries", type=int, default=50, help="queries of each kind")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument(
        "--cluster-size",
        type=int,
        default=50,
        help="Vectors per cluster (like the clips of one scene); 1 = uniform.",
    )
    parser.add_argument(
        "--index-kind",
        choices=("halfvec", "vector", "both"),
        default="halfvec",
        help="the HNSW index's element type (both: one after the other)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="heaters-bench-pgvector-") as tmp:
        home = Path(tmp)
        try:
            server = ensure_server(home)
            db = Database(server.url, auto_migrate=False)
            migrate(db.engine)
            with db.engine.begin() as conn:  # room for the HNSW graph while it is built
                conn.execute(text("ALTER DATABASE postgres SET maintenance_work_mem = '1GB'"))
            t0 = time.perf_counter()
            ids = _clips(db, args.n)
            t_clips = time.perf_counter() - t0
            vectors, centres = _clustered(rng, args.n, args.dim, args.cluster_size)
            t0 = time.perf_counter()
            _copy_vectors(db, ids, vectors)
            with db.engine.begin() as conn:
                conn.execute(text("ANALYZE clip_embeddings; ANALYZE clips"))
            t_copy = time.perf_counter() - t0
            print(
                f"{args.n} clips in {t_clips:.1f} s; {args.n} x {args.dim}-d vectors copied "
                f"in {t_copy:.1f} s; load average {load_before}"
            )
            picks = rng.choice(args.n, args.queries, replace=False)
            near = vectors[picks] + 0.1 / np.sqrt(args.dim) * rng.standard_normal(
                (args.queries, args.dim), dtype=np.float32
            )
            near /= np.linalg.norm(near, axis=1, keepdims=True)
            queries = {"near": near, "fresh": _fresh(rng, centres, args.queries, args.dim)}

            db.engine.dispose()
            kinds = ("vector", "halfvec") if args.index_kind == "both" else (args.index_kind,)
            built: dict[str, dict[str, float]] = {}
            hnsw, narrow = {}, {}
            for kind in kinds:
                t0 = time.perf_counter()
                name = search.ensure_hnsw_index(db, MODEL, args.dim, kind=kind)
                t_index = time.perf_counter() - t0
                with db.engine.connect() as conn:
                    size = conn.execute(text(f"SELECT pg_relation_size('{name}')")).scalar()
                built[kind] = {"index_s": round(t_index, 2), "index_mb": round(size / 2**20, 1)}
                print(
                    f"{kind} HNSW index built in {t_index:.1f} s, {size / 2**20:.1f} MiB "
                    "(m=16, ef_construction=64)"
                )
                print("plan with index:   ", _plan(db, near[0], args.dim, kind))
                for q in queries.values():  # warm the cache
                    _time_queries(db, q[:5], args.k)
                hnsw[kind] = {k: _time_queries(db, q, args.k) for k, q in queries.items()}
                narrow[kind] = {k: _time_at(db, q, args.k, 40, kind) for k, q in queries.items()}
                with db.engine.begin() as conn:
                    conn.execute(text(f"DROP INDEX {name}"))
                search.index.forget_index_kinds()  # the exact reference ranks in 4-byte floats
            print("plan without index:", _plan(db, near[0], args.dim))
            for q in queries.values():
                _time_queries(db, q[:2], args.k)
            exact = {kind: _time_queries(db, q, args.k) for kind, q in queries.items()}
            for kind, q in queries.items():  # the exact answers agree with NumPy's ranking
                top = np.argsort(-(vectors @ q[0]))[: args.k]
                assert {ids[i] for i in top} == set(exact[kind][1][0]), "seq scan != numpy"
            db.dispose()
        finally:
            stop_server(home)

    load_after = _loadavg()
    results: dict[str, dict[str, dict[str, float]]] = {}
    print(
        f"\ntop-{args.k} cosine query over {args.n} x {args.dim}-d vectors, "
        f"{args.queries} queries of each kind (join with clips, as similar_clips runs it):"
    )
    for index in hnsw:
        print(
            f"-- {index} index: {built[index]['index_mb']} MiB, "
            f"built in {built[index]['index_s']} s"
        )
        results[index] = {}
        for kind in QUERY_KINDS:
            h_mean, h_p95 = _stats(hnsw[index][kind][0])
            e_mean, e_p95 = _stats(exact[kind][0])
            n_mean = _stats(narrow[index][kind][0])[0]
            row = {
                "hnsw_mean_ms": round(h_mean, 3),
                "hnsw_p95_ms": round(h_p95, 3),
                "exact_mean_ms": round(e_mean, 3),
                "exact_p95_ms": round(e_p95, 3),
                "speedup_mean": round(e_mean / h_mean, 2),
                "speedup_p95": round(e_p95 / h_p95, 2),
                "recall": round(_recall(hnsw[index][kind][1], exact[kind][1]), 4),
                "recall_ef40": round(_recall(narrow[index][kind][1], exact[kind][1]), 4),
                "ef40_mean_ms": round(n_mean, 3),
            }
            results[index][kind] = row
            print(f"{kind} queries ({'stored + noise' if kind == 'near' else 'not stored'}):")
            print(
                f"  HNSW index:        mean {h_mean:8.2f} ms   p95 {h_p95:8.2f} ms   "
                f"recall@{args.k} {row['recall']:.3f} (ef_search 100)"
            )
            print(
                f"  no index (exact):  mean {e_mean:8.2f} ms   p95 {e_p95:8.2f} ms   "
                f"recall@{args.k} 1.000"
            )
            print(
                f"  speed-up: {row['speedup_mean']:.1f}x mean, {row['speedup_p95']:.1f}x p95; "
                f"with pgvector's default ef_search 40: recall@{args.k} "
                f"{row['recall_ef40']:.3f}, mean {n_mean:.2f} ms"
            )
    print(f"load average before {load_before}, after {load_after}")
    if args.json:
        out = {
            "n": args.n,
            "dim": args.dim,
            "queries": args.queries,
            "k": args.k,
            "cluster_size": args.cluster_size,
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "seconds": {"clips": round(t_clips, 2), "copy": round(t_copy, 2)},
            "indexes": built,
            "results": results,
        }
        print(json.dumps(out))
    return 0


def _time_at(
    db: Database, queries: np.ndarray, k: int, ef: int, kind: str = "vector"
) -> tuple[list[float], list[list[int]]]:
    """The same query with a given hnsw.ef_search (SET LOCAL in each transaction)."""
    # nearest_clips sets ef_search to max(100, 4k) itself; query directly here.
    times, got = [], []
    dim = queries.shape[1]
    for q in queries:
        vec = "[" + ",".join(f"{x:.7f}" for x in q) + "]"
        t0 = time.perf_counter()
        with db.session() as s:
            s.execute(text(f"SET LOCAL hnsw.ef_search = {ef}"))
            got.append(
                list(
                    s.scalars(
                        text(
                            "SELECT clips.id FROM clip_embeddings "
                            "JOIN clips ON clips.id = clip_id "
                            f"WHERE model_name = '{MODEL}' AND generation_strategy = '{STRATEGY}' "
                            f"AND clips.superseded_at IS NULL "
                            f"ORDER BY embedding::{kind}({dim}) <=> '{vec}' LIMIT {k}"
                        )
                    )
                )
            )
        times.append(time.perf_counter() - t0)
    return times, got


if __name__ == "__main__":
    sys.exit(main())
