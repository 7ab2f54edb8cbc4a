"""An inverted file over unit vectors, searched as matrix products: the approximate engine of
:func:`heaters_resources.search.knn.knn_graph` (``faiss-ivf``).

Spherical k-means splits the vectors into ``nlist = 2 sqrt(n)`` cells; each query is compared,
by one BLAS product per cell, with every vector of its ``nprobe`` nearest cells
(``faiss.IndexIVFFlat`` scans the same vectors one query at a time, ~5x slower here). Cost
``n * (nlist + nprobe * n / nlist) * dim``. ``nprobe`` is tuned on every run: the smallest of
1, 2, 3, 4, 6, 9, ... (x1.5) whose recall@k on a sample of queries, against their exact
neighbours, reaches ``target_recall``; so the parameters follow the data (clustered embeddings
need 1-2 cells, structureless random vectors most of them) instead of being fixed for one
distribution. When more than half the cells are needed, ``auto`` searches exactly instead (it
then costs about the same). The tenth of the vectors nearest a cell boundary are stored in
their second cell too, and those queries probe one cell more, so near-duplicates split by a
boundary still meet (at a million clips: recall@10 0.989 -> 0.994 for ~10 % more products).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from heaters_resources.search.knn import (
    QUERY_BLOCK,
    VECTOR_BLOCK,
    KnnGraph,
    TopK,
    faiss_module,
    faiss_threads,
    flat_faiss,
    mask_self,
    pool_map,
    recall_at_k,
)

TARGET_RECALL = 0.97  # tuned on a sample: margin above the 0.95 promised by the recall check
TUNE_SAMPLE = 256
#: k-means trains on max(40 per cell, a fifth of the vectors), 4 rounds: a natural group of
#: clips (a scene, a video) needs several of its members in the sample to get a cell of its
#: own, else its members scatter over cells and every query has to probe many. Measured at a
#: million clips in groups of 50: 40 per cell -> nprobe 9+, a tenth -> 6-9, a fifth -> 2.
TRAIN_PER_CELL = 40
TRAIN_FRACTION = 5
KMEANS_ITERS = 4
#: Rows nearest a cell boundary also stored in their second cell (see _cells).
SPILL_FRACTION = 0.1
#: nlist = 2 sqrt(n): balances the coarse assignment (n * nlist products) against the scan
#: (nprobe * n * n / nlist) for the 2 cells a query typically probes.
CELLS_PER_SQRT = 2.0


@dataclass
class _Cells:
    """An inverted file: centroids, and the rows of each cell (``rows[starts[c]:starts[c+1]]``)."""

    centroids: np.ndarray
    rows: np.ndarray
    starts: np.ndarray
    primary: np.ndarray | None = None  # each row's own cell, when some rows are in two


def _coarse(
    faiss: Any, x: np.ndarray, centroids: np.ndarray, p: int, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``p`` nearest cells of every row of ``x``, nearest first (int32, (len(x), p)), and
    the row's similarity to each (float32)."""
    out = np.empty((len(x), p), dtype=np.int32)
    sims = np.empty((len(x), p), dtype=np.float32)

    def block(start: int) -> None:
        got, cells = faiss.knn(
            x[start : start + QUERY_BLOCK], centroids, p, faiss.METRIC_INNER_PRODUCT
        )
        out[start : start + len(cells)] = cells
        sims[start : start + len(cells)] = got

    for _ in pool_map(block, range(0, len(x), QUERY_BLOCK), workers):
        pass
    return out, sims


def _cells(centroids: np.ndarray, probes: np.ndarray, gap: np.ndarray | None) -> _Cells:
    """Every row in its nearest cell; the rows nearest a boundary (``gap``, the similarity to
    their best cell minus that to their second, in its lowest SPILL_FRACTION) also in their
    second cell. Two near-duplicates on either side of a boundary then still meet when each
    query probes one cell (:func:`_boundary_probes` does the same from the query side)."""
    nlist = len(centroids)
    cell, row = probes[:, 0], np.arange(len(probes))
    if gap is not None:
        spill = np.flatnonzero(gap <= np.quantile(gap, SPILL_FRACTION))
        cell = np.concatenate([cell, probes[spill, 1]])
        row = np.concatenate([row, spill])
    order = np.argsort(cell, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=nlist))])
    return _Cells(centroids, row[order], starts, probes[:, 0] if gap is not None else None)


def _boundary_probes(probes: np.ndarray, nprobe: int, gap: np.ndarray | None) -> np.ndarray:
    """The first ``nprobe`` cells of each query, plus the next one (else -1) for the queries
    nearest a boundary (lowest SPILL_FRACTION of ``gap``)."""
    if gap is None or probes.shape[1] <= nprobe:
        return probes[:, :nprobe]
    out = probes[:, : nprobe + 1].copy()
    out[gap > np.quantile(gap, SPILL_FRACTION), nprobe] = -1
    return out


def _scan(
    faiss: Any,
    x: np.ndarray,
    queries: np.ndarray,
    probes: np.ndarray,
    cells: _Cells,
    k: int,
    workers: int,
) -> TopK:
    """Each query against every row of its probed cells: one BLAS product per cell."""
    nlist = len(cells.centroids)
    owner = np.repeat(np.arange(len(queries)), probes.shape[1])
    flat = probes.ravel()
    used = flat >= 0
    owner, flat = owner[used], flat[used]
    probed = np.sort(owner * nlist + flat)  # (query, cell) pairs, for lookups
    order = np.argsort(flat, kind="stable")
    owner, bounds = owner[order], np.searchsorted(flat[order], np.arange(nlist + 1))
    best = TopK(len(queries), k)
    twice = cells.primary is not None and probes.shape[1] > 1

    def cell(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mine = owner[bounds[c] : bounds[c + 1]]
        members = cells.rows[cells.starts[c] : cells.starts[c + 1]]
        qpos = queries[mine]
        sims, local = faiss.knn(
            x[qpos], x[members], min(k + 1, len(members)), faiss.METRIC_INNER_PRODUCT
        )
        ids = np.where(local >= 0, members[np.maximum(local, 0)], -1)
        mask_self(sims, ids, qpos)
        if twice and cells.primary is not None:
            # a spilled row's copy, for a query that also probes the row's own cell, would
            # count twice: drop the copy (the row comes from its cell, ranked the same)
            home = cells.primary[np.maximum(ids, 0)]
            pair = mine[:, None] * nlist + home
            at = np.minimum(np.searchsorted(probed, pair), len(probed) - 1)
            copy = (ids >= 0) & (home != c) & (probed[at] == pair)
            sims[copy], ids[copy] = -np.inf, -1
        return mine, sims, ids

    busy = [
        c
        for c in range(nlist)
        if bounds[c + 1] > bounds[c] and cells.starts[c + 1] > cells.starts[c]
    ]
    for mine, sims, ids in pool_map(cell, busy, workers):
        best.merge(mine, sims, ids)
    return best


def _kmeans(
    faiss: Any, train: np.ndarray, nlist: int, rng: np.random.Generator, workers: int
) -> np.ndarray:
    """Spherical k-means (Lloyd, KMEANS_ITERS rounds, from random rows) whose assignment steps
    run on the thread pool like every other product here; an empty cell restarts at a
    random row."""
    centroids = train[rng.choice(len(train), nlist, replace=False)].copy()
    for _ in range(KMEANS_ITERS):
        sums = np.zeros_like(centroids)
        for start in range(0, len(train), VECTOR_BLOCK):
            part = train[start : start + VECTOR_BLOCK]
            cells = _coarse(faiss, part, centroids, 1, workers)[0][:, 0]
            order = np.argsort(cells, kind="stable")
            busy, first = np.unique(cells[order], return_index=True)
            sums[busy] += np.add.reduceat(part[order], first, axis=0)
        norms = np.linalg.norm(sums, axis=1)
        empty = np.flatnonzero(norms == 0)
        sums[empty] = train[rng.choice(len(train), len(empty), replace=False)]
        norms[empty] = 1.0
        centroids = (sums / norms[:, None]).astype(np.float32)
    return centroids


def ivf_faiss(
    x: np.ndarray,
    queries: np.ndarray,
    k: int,
    workers: int,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
    fallback_flat: bool = False,
) -> KnnGraph:
    """Approximate top-k through the inverted file described in the module docstring."""
    faiss = faiss_module()
    n = len(x)
    rng = np.random.default_rng(seed)
    nlist = int(nlist or max(1, min(n // TRAIN_PER_CELL, round(CELLS_PER_SQRT * np.sqrt(n)))))
    t0 = time.perf_counter()
    first = min(nlist, max(2, nprobe or 4))
    with faiss_threads(faiss, 1):
        train = min(n, max(TRAIN_PER_CELL * nlist, n // TRAIN_FRACTION))
        centroids = _kmeans(
            faiss, x[np.sort(rng.choice(n, train, replace=False))], nlist, rng, workers
        )
        probes, sims = _coarse(faiss, x, centroids, first, workers)
        gap = sims[:, 0] - sims[:, 1] if first > 1 and SPILL_FRACTION > 0 else None
        del sims
        cells = _cells(centroids, probes, gap)
        params: dict[str, Any] = {"nlist": nlist, "train_rows": train}
        t_index = time.perf_counter() - t0
        params["cell_rows_max"] = int(np.diff(cells.starts).max())
        t0 = time.perf_counter()
        if nprobe is None:
            stop = nlist // 2 + 1 if fallback_flat else nlist
            nprobe, tuned = _tune(faiss, x, queries, cells, k, workers, target_recall, rng, stop)
            params.update(tuned)
        nprobe = min(nprobe, nlist)
        t_tune = time.perf_counter() - t0
        if fallback_flat and 2 * nprobe > nlist:  # scanning most cells: exact costs the same
            del probes
            t0 = time.perf_counter()
            graph = flat_faiss(x, queries, k, workers)
            graph.params = {**params, "ivf_nprobe_needed": nprobe}
            graph.seconds = {"index": t_index, "tune": t_tune, "search": time.perf_counter() - t0}
            return graph
        t0 = time.perf_counter()
        width = min(nlist, nprobe + 1)
        mine = probes[queries] if width <= first else None
        del probes
        if mine is None:
            mine = _coarse(faiss, x[queries], centroids, width, workers)[0]
        qprobes = _boundary_probes(mine, nprobe, None if gap is None else gap[queries])
        best = _scan(faiss, x, queries, qprobes, cells, k, workers)
    graph = best.graph(queries, "faiss-ivf", min(k, max(0, n - 1)))
    graph.params = {**params, "nprobe": nprobe}
    graph.seconds = {"index": t_index, "tune": t_tune, "search": time.perf_counter() - t0}
    return graph


def _tune(
    faiss: Any,
    x: np.ndarray,
    queries: np.ndarray,
    cells: _Cells,
    k: int,
    workers: int,
    target: float,
    rng: np.random.Generator,
    stop: int,
) -> tuple[int, dict[str, Any]]:
    """The smallest nprobe in 1, 2, 3, 4, 6, ... reaching ``target`` recall@k on a sample;
    the climb ends past ``stop`` (where the caller would search exactly anyway)."""
    nlist = len(cells.centroids)
    sample = np.sort(rng.choice(queries, min(len(queries), TUNE_SAMPLE), replace=False))
    truth = flat_faiss(x, sample, k, workers)
    order = _coarse(faiss, x[sample], cells.centroids, nlist, workers)[0]
    nprobe, recall = 1, 0.0
    while True:
        found = _scan(faiss, x, sample, order[:, :nprobe], cells, k, workers)
        got = found.graph(sample, "", truth.neighbours.shape[1])
        recall = recall_at_k(got.neighbours, truth.distances, got.distances)
        if recall >= target or nprobe >= min(nlist, stop):
            break
        nprobe = min(nlist, max(nprobe + 1, round(1.5 * nprobe)))
    return nprobe, {"tune_sample": len(sample), "tune_recall": round(recall, 4)}
