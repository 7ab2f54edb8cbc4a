"""Near-duplicate clips of one embedding space, found in one set-based pass.

Why not pgvector: one HNSW lookup per clip (a LATERAL top-k) is a million index round trips
at a million clips (~45 min). Here the space's live vectors come out of Postgres in one binary
COPY (:mod:`~heaters_resources.search.vectors`), a k-nearest-neighbour graph is built over the
whole matrix in batch (:mod:`~heaters_resources.search.knn`: faiss when the extra is
installed, exact NumPy otherwise), and the pairs are read off the graph with array
operations. Only the clips of the pairs returned are read back as rows.

Incremental runs (``since_clip_id`` / ``clip_ids``) query only the new clips, against every
clip of the space: the pairs that involve at least one new clip, for the cost of
``new x all`` products (exact up to a billion pairs, e.g. 1,000 new clips against a million).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import any_, select

from heaters_media.errors import InvalidInputError
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip
from heaters_resources.search.index import SimilarClip
from heaters_resources.search.knn import KnnGraph, graph_recall, knn_graph
from heaters_resources.search.similarity import DuplicatePair, space_dimension
from heaters_resources.search.space import default_model, default_strategy
from heaters_resources.search.vectors import load_space
from heaters_resources.states.core import id_array


@dataclass
class NearDuplicates:
    """The pairs, and how they were found: which engine, over how many clips, in what time
    (``seconds``: load / index / search / pairs / recall / total) and, when asked for, the
    graph's recall@k against exact search on a sample of queried clips."""

    pairs: list[DuplicatePair]
    model: str
    strategy: str
    threshold: float
    engine: str = "none"
    clips: int = 0
    queried: int = 0
    candidates: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    recall: float | None = None
    recall_sample: int = 0

    def summary(self) -> dict[str, Any]:
        """Everything but the pairs, JSON-ready."""
        return {
            "engine": self.engine,
            "clips": self.clips,
            "queried": self.queried,
            "candidates": self.candidates,
            "params": self.params,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "recall": None if self.recall is None else round(self.recall, 4),
            "recall_sample": self.recall_sample,
        }


def graph_pairs(
    graph: KnnGraph, x: np.ndarray, ids: np.ndarray, threshold: float, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Row pairs (a, b) of the graph under ``threshold``, each once with ``ids[a] < ids[b]``,
    closest first, at most ``limit``; returns (a rows, b rows, distances, pairs under
    threshold before the limit).

    A pair seen from both ends is kept once, so a clip missing from its duplicate's top-k
    (that one has ``per_clip`` closer neighbours) still pairs through its own list. Distances
    of the pairs returned are recomputed in float64, so they do not depend on the engine's
    rounding; the order is (distance, a id, b id), for a stable output whatever order the
    rows came out of Postgres in.
    """
    rows, cols = np.nonzero(graph.distances < threshold)
    if not len(rows) or limit <= 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0), len(rows)
    one = graph.queries[rows]
    other = graph.neighbours[rows, cols]
    dist = graph.distances[rows, cols]
    swap = ids[one] > ids[other]
    a, b = np.where(swap, other, one), np.where(swap, one, other)
    order = np.lexsort((dist, b, a))
    a, b, dist = a[order], b[order], dist[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, dist = a[first], b[first], dist[first]
    total = len(a)
    keep = np.lexsort((ids[b], ids[a], dist))[:limit]
    a, b = a[keep], b[keep]
    exact = 1.0 - np.einsum(
        "ij,ij->i", x[a].astype(np.float64), x[b].astype(np.float64), optimize=False
    )
    exact = np.maximum(exact, 0.0)
    under = exact < threshold
    a, b, exact = a[under], b[under], exact[under]
    final = np.lexsort((ids[b], ids[a], exact))
    return a[final], b[final], exact[final], total


def _clips(db: Database, ids: Sequence[int]) -> dict[int, tuple[str, int, str]]:
    if not ids:
        return {}
    stmt = select(Clip.id, Clip.identifier, Clip.source_video_id, Clip.state).where(
        Clip.id == any_(id_array(ids))
    )
    with db.session() as session:
        return {
            int(r.id): (r.identifier, int(r.source_video_id), r.state)
            for r in session.execute(stmt)
        }


def check_request(
    threshold: float, per_clip: int, limit: int, check_recall: int, nprobe: int | None
) -> None:
    """InvalidInputError for a request that cannot mean anything: a NaN threshold compares
    false with every distance (no pair, silently), and cosine distances lie in [0, 2], so a
    threshold must be above 0 (the comparison is strict) and at most 2."""
    if not isinstance(threshold, int | float) or not 0 < threshold <= 2:  # NaN fails too
        raise InvalidInputError(
            f"threshold must be a cosine distance > 0 and <= 2, got {threshold!r}"
        )
    if per_clip < 1 or limit < 0 or check_recall < 0 or (nprobe is not None and nprobe < 1):
        raise InvalidInputError(
            "need per_clip >= 1, limit >= 0, check_recall >= 0 and nprobe >= 1, got "
            f"{per_clip}, {limit}, {check_recall}, {nprobe}"
        )


def find_near_duplicates(
    db: Database,
    threshold: float = 0.05,
    model_name: str | None = None,
    strategy: str | None = None,
    *,
    per_clip: int = 10,
    limit: int = 10_000,
    engine: str = "auto",
    index: str = "auto",
    since_clip_id: int | None = None,
    clip_ids: Sequence[int] | None = None,
    check_recall: int = 0,
    nprobe: int | None = None,
    seed: int = 0,
) -> NearDuplicates:
    """Pairs of live clips whose cosine distance is below ``threshold``, closest first.

    Each queried clip looks at its ``per_clip`` nearest neighbours; a clip with more than
    ``per_clip`` duplicates reports only the closest ones (its duplicates' own lists may add
    more). Queried: every clip of the space, or only those with an id above ``since_clip_id``
    and/or in ``clip_ids`` (incremental). ``engine`` / ``index``: see
    :func:`heaters_resources.search.knn.knn_graph`. ``check_recall``: that many queried clips
    are searched exactly too, and the graph's recall@``per_clip`` on them is reported.
    """
    check_request(threshold, per_clip, limit, check_recall, nprobe)
    model_name, strategy = model_name or default_model(), strategy or default_strategy()
    out = NearDuplicates([], model_name, strategy, threshold)
    start = time.perf_counter()
    dim = space_dimension(db, model_name, strategy)
    if dim is None:
        return out
    space = load_space(db, model_name, strategy, dim)
    queries = None
    if since_clip_id is not None or clip_ids is not None:
        wanted = np.zeros(len(space), dtype=bool)
        if since_clip_id is not None:
            wanted |= space.ids > since_clip_id
        if clip_ids is not None:
            wanted |= np.isin(space.ids, np.asarray(list(clip_ids), dtype=np.int64))
        queries = np.flatnonzero(wanted)
    graph = knn_graph(
        space.vectors, per_clip, queries, engine=engine, index=index, nprobe=nprobe, seed=seed
    )
    t0 = time.perf_counter()
    a, b, dist, total = graph_pairs(graph, space.vectors, space.ids, threshold, limit)
    a_ids, b_ids = space.ids[a], space.ids[b]
    rows = _clips(db, sorted({int(i) for i in np.concatenate([a_ids, b_ids])}))
    for x, y, d in zip(a_ids.tolist(), b_ids.tolist(), dist.tolist(), strict=True):
        if x not in rows or y not in rows:  # deleted since the vectors were read
            continue
        out.pairs.append(DuplicatePair(SimilarClip(x, *rows[x], d), SimilarClip(y, *rows[y], d)))
    seconds = {"load": space.seconds, **graph.seconds, "pairs": time.perf_counter() - t0}
    if check_recall > 0:
        t0 = time.perf_counter()
        out.recall, out.recall_sample = graph_recall(space.vectors, graph, check_recall, seed + 1)
        seconds["recall"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - start
    out.engine, out.clips, out.queried, out.candidates = (
        graph.engine,
        len(space),
        len(graph.queries),
        total,
    )
    out.params = {"per_clip": per_clip, **graph.params}
    if space.dropped_zero:
        out.params["zero_vectors_left_out"] = space.dropped_zero
    out.seconds = seconds
    return out
