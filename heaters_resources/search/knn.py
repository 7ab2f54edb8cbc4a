"""k-nearest-neighbour graphs over one matrix of unit vectors, in batch (cosine = dot product).

Why not one index lookup per clip: at a million clips that is a million round trips through
pgvector's HNSW index (45 min). A set-based pass over the whole matrix instead spends its time
in matrix products, which run near the CPU's peak. Engines:

- ``exact`` (NumPy only, always available): tiles of queries x all vectors, BLAS products and
  a running top-k; correct for any size, cost ``q * n * dim``.
- ``faiss-flat``: the same exact search with ``faiss.knn`` (BLAS + a C top-k heap).
- ``faiss-ivf``: an inverted file run as matrix products, its ``nprobe`` tuned on every run
  to a recall target (:mod:`heaters_resources.search.ivf`).

faiss is an optional extra (``faiss-cpu``); its work is split into blocks run on a thread
pool (one per core) of single-threaded faiss calls, rather than faiss's own OpenMP threads,
whose spin-waits lose badly on a machine whose cores are shared
(``benchmarks/bench_neardup.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heaters_media.errors import InvalidInputError

ENGINES = ("auto", "faiss", "exact")
INDEXES = ("auto", "flat", "ivf")
#: Up to this many query x vector pairs ``auto`` searches exactly whatever the inverted file
#: would cost (a whole space of up to 10k clips): k-means and tuning would not pay.
FLAT_MAX_PAIRS = 100_000_000
QUERY_BLOCK = 2048
VECTOR_BLOCK = 8192
FIRST_TILE = 1024


@dataclass
class KnnGraph:
    """The ``k`` nearest other rows of each query row, closest first (-1 / inf: fewer)."""

    queries: np.ndarray  # int64 (q,) row positions
    neighbours: np.ndarray  # int64 (q, k) row positions
    distances: np.ndarray  # float32 (q, k) cosine distances, ascending
    engine: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def faiss_module() -> Any:
    """The faiss module, or None when the optional extra is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def faiss_threads(faiss: Any, count: int) -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _top(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest similarities of each row (unordered) with their ids."""
    if sims.shape[1] <= k:
        return sims, ids
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(sims, part, 1), np.take_along_axis(ids, part, 1)


class TopK:
    """Running top-k (similarity, row) of a set of query rows, merged block by block."""

    def __init__(self, rows: int, k: int) -> None:
        self.k = k
        self.sims = np.full((rows, k), -np.inf, dtype=np.float32)
        self.ids = np.full((rows, k), -1, dtype=np.int64)

    def merge(self, rows: np.ndarray | slice, sims: np.ndarray, ids: np.ndarray) -> None:
        both_s = np.concatenate([self.sims[rows], sims], axis=1)
        both_i = np.concatenate([self.ids[rows], ids], axis=1)
        self.sims[rows], self.ids[rows] = _top(both_s, both_i, self.k)

    def merge_above(self, rows: slice, sims: np.ndarray, first_id: int) -> None:
        """Merge a dense tile (columns = ids ``first_id ...``) looking only at the entries
        above each row's current k-th best: after the first tiles that is a handful per row,
        so this costs one comparison per entry instead of an ``argpartition`` of the tile."""
        kth = self.sims[rows].min(axis=1)
        r, c = np.nonzero(sims > kth[:, None])
        if not len(r):
            return
        touched = np.unique(r)
        k = self.k
        old_s, old_i = self.sims[rows][touched], self.ids[rows][touched]
        row = np.concatenate([np.repeat(np.arange(len(touched)), k), np.searchsorted(touched, r)])
        val = np.concatenate([old_s.ravel(), sims[r, c]])
        ident = np.concatenate([old_i.ravel(), c.astype(np.int64) + first_id])
        order = np.lexsort((-val, row))
        row, val, ident = row[order], val[order], ident[order]
        rank = np.arange(len(row)) - np.searchsorted(row, row)
        keep = rank < k  # every touched row has its k old entries, so exactly k each
        target = np.arange(rows.start or 0, rows.stop or 0)[touched]
        self.sims[target] = val[keep].reshape(-1, k)
        self.ids[target] = ident[keep].reshape(-1, k)

    def graph(self, queries: np.ndarray, engine: str, width: int) -> KnnGraph:
        order = np.argsort(-self.sims, axis=1, kind="stable")[:, :width]
        sims = np.take_along_axis(self.sims, order, 1)
        ids = np.take_along_axis(self.ids, order, 1)
        missing = ids < 0
        dist = np.maximum(0.0, 1.0 - sims).astype(np.float32)
        dist[missing] = np.inf
        return KnnGraph(queries, ids, dist, engine)


def mask_self(sims: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> None:
    """A row is not its own neighbour (faiss pads with id -1, never equal to a row)."""
    own = ids == queries[:, None]
    sims[own] = -np.inf
    ids[own] = -1


def _tiles(n: int) -> Iterator[tuple[int, int]]:
    edges = [0, *range(FIRST_TILE, n, VECTOR_BLOCK), n] if n > FIRST_TILE else [0, n]
    yield from itertools.pairwise(edges)


def exact_numpy(x: np.ndarray, queries: np.ndarray, k: int) -> KnnGraph:
    """Exact top-k by tiles of QUERY_BLOCK queries x VECTOR_BLOCK vectors (memory: one tile)."""
    n = len(x)
    best = TopK(len(queries), k)
    for qs in range(0, len(queries), QUERY_BLOCK):
        qpos = queries[qs : qs + QUERY_BLOCK]
        rows = slice(qs, qs + len(qpos))
        xq = x[qpos]
        # a small first tile sets each row's k-th best; the large ones after it only pass on
        # the entries above it
        for vs, ve in _tiles(n):
            sims = xq @ x[vs:ve].T
            local = qpos - vs
            inside = (local >= 0) & (local < sims.shape[1])
            sims[np.flatnonzero(inside), local[inside]] = -np.inf
            if vs == 0:
                ids = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
                best.merge(rows, *_top(sims, ids, k))
            else:
                best.merge_above(rows, sims, vs)
    return best.graph(queries, "exact", min(k, max(0, n - 1)))


def pool_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> Iterator[Any]:
    """``map`` on ``workers`` threads (faiss and BLAS release the GIL). Each thread runs faiss
    single-threaded: OpenMP's thread count is a per-thread setting, so without this every
    worker would start its own team of threads and they would fight for the cores."""
    if workers <= 1:
        yield from map(fn, items)
        return
    faiss = faiss_module()
    init = None if faiss is None else (lambda: faiss.omp_set_num_threads(1))
    pool = ThreadPoolExecutor(workers, initializer=init)
    try:
        yield from pool.map(fn, items)
    finally:  # on an error or Ctrl-C, drop the blocks not started yet
        pool.shutdown(wait=True, cancel_futures=True)


def flat_faiss(x: np.ndarray, queries: np.ndarray, k: int, workers: int) -> KnnGraph:
    """Exact top-k with faiss.knn, a block of queries per task."""
    faiss = faiss_module()
    kk = min(k + 1, len(x))
    best = TopK(len(queries), k)

    def block(start: int) -> tuple[int, np.ndarray, np.ndarray]:
        qpos = queries[start : start + QUERY_BLOCK]
        sims, ids = faiss.knn(x[qpos], x, kk, faiss.METRIC_INNER_PRODUCT)
        mask_self(sims, ids, qpos)
        return start, sims, ids

    with faiss_threads(faiss, 1):
        for start, sims, ids in pool_map(block, range(0, len(queries), QUERY_BLOCK), workers):
            best.merge(slice(start, start + len(sims)), sims, ids)
    return best.graph(queries, "faiss-flat", min(k, max(0, len(x) - 1)))


def recall_at_k(
    found: np.ndarray, exact_dist: np.ndarray, found_dist: np.ndarray, eps: float = 1e-5
) -> float:
    """Mean over queries of the share of the exact top-k that the graph holds. Ties count: a
    found neighbour as close as the exact k-th (within ``eps``) is a right answer, since exact
    search itself picks arbitrarily among equal distances."""
    if not len(found):
        return 1.0
    want = np.isfinite(exact_dist).sum(axis=1)
    kth = np.where(want > 0, exact_dist[np.arange(len(found)), np.maximum(want - 1, 0)], -np.inf)
    hits = ((found_dist <= kth[:, None] + eps) & (found >= 0)).sum(axis=1)
    return float(np.mean(np.where(want > 0, np.minimum(hits, want) / np.maximum(want, 1), 1.0)))


def flat_is_cheaper(queries: int, n: int) -> bool:
    """Exact search costs ``queries * n`` products; the inverted file at least its coarse
    assignment and its scan, ~``2 n sqrt(n)``. So an incremental run (1,000 new clips against
    a million) is searched exactly, a whole space above 10k clips through the inverted file."""
    return queries * n <= max(FLAT_MAX_PAIRS, 2 * n * math.sqrt(n))


def knn_graph(
    x: np.ndarray,
    k: int,
    queries: np.ndarray | None = None,
    *,
    engine: str = "auto",
    index: str = "auto",
    nlist: int | None = None,
    nprobe: int | None = None,
    workers: int | None = None,
    seed: int = 0,
) -> KnnGraph:
    """The k nearest other rows of each query row (all rows by default) of unit vectors ``x``.

    ``engine``: ``faiss`` (needs the extra), ``exact`` (NumPy), ``auto`` (faiss when
    installed). ``index`` (faiss only): ``flat`` (exact), ``ivf`` (approximate, tuned),
    ``auto`` (flat when :func:`flat_is_cheaper`, else ivf, itself falling back to flat
    when the data needs most cells probed).
    """
    if engine not in ENGINES or index not in INDEXES:
        raise InvalidInputError(f"engine must be one of {ENGINES}, index one of {INDEXES}")
    n = len(x)
    q = np.arange(n, dtype=np.int64) if queries is None else np.asarray(queries, dtype=np.int64)
    faiss = faiss_module()
    if engine == "faiss" and faiss is None:
        raise InvalidInputError("engine 'faiss' needs the faiss-cpu package (the faiss extra)")
    use_faiss = faiss is not None and engine != "exact"
    if index == "ivf" and not use_faiss:
        raise InvalidInputError("index 'ivf' needs engine 'faiss' (and the faiss-cpu package)")
    workers = workers or threads()
    t0 = time.perf_counter()
    if n < 2 or not len(q) or k < 1:
        width = min(max(k, 0), max(0, n - 1))
        graph = TopK(len(q), max(k, 1)).graph(q, "exact", width)
    elif not use_faiss:
        graph = exact_numpy(x, q, k)
    elif index == "ivf" or (index == "auto" and not flat_is_cheaper(len(q), n)):
        from heaters_resources.search.ivf import ivf_faiss  # it builds on this module

        return ivf_faiss(
            x, q, k, workers, nlist=nlist, nprobe=nprobe, seed=seed, fallback_flat=index == "auto"
        )
    else:
        graph = flat_faiss(x, q, k, workers)
    graph.seconds = {"index": 0.0, "search": time.perf_counter() - t0}
    return graph


def exact_neighbours(x: np.ndarray, queries: np.ndarray, k: int) -> KnnGraph:
    """Exact top-k of some rows (faiss when installed, NumPy otherwise): the recall reference."""
    if faiss_module() is not None:
        return flat_faiss(x, queries, k, threads())
    return exact_numpy(x, queries, k)


def graph_recall(x: np.ndarray, graph: KnnGraph, sample: int, seed: int = 1) -> tuple[float, int]:
    """recall@k of ``graph`` on ``sample`` of its queries drawn at random, against exact search;
    returns (recall, queries checked)."""
    if not len(graph.queries) or sample < 1:
        return 1.0, 0
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(graph.queries), min(sample, len(graph.queries)), replace=False))
    truth = exact_neighbours(x, graph.queries[pick], graph.neighbours.shape[1])
    recall = recall_at_k(graph.neighbours[pick], truth.distances, graph.distances[pick])
    return recall, len(pick)
