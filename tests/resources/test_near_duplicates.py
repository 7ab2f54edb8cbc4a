"""Near-duplicates as one set-based pass: vectors streamed out of Postgres (binary COPY), a
k-nearest-neighbour graph built in batch (exact NumPy, faiss flat, faiss inverted file), pairs
read off the graph. Real Postgres + pgvector (the session server of conftest.py); clips made
through the state module, vectors stored as rows of clip_embeddings.

Planted duplicates sit at known tiny distances among random vectors that are far from each
other (cosine distance ~1 in 32-d), so the expected pairs are known exactly.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, insert, select, update

from heaters_media.errors import InvalidInputError
from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipEmbedding
from heaters_resources.search import duplicates, ivf, knn, similarity, vectors
from heaters_resources.store import keys

MODEL, STRATEGY, DIM = "test/dups", "keyframe_multi_avg", 32
ENGINES = [
    "exact",
    pytest.param(
        "faiss",
        marks=pytest.mark.skipif(knn.faiss_module() is None, reason="faiss-cpu not installed"),
    ),
]


def _video(db: Database, clips: int) -> list[int]:
    vid = states.create_source_video(db, f"test://{clips}")
    states.start_downloading(db, vid)
    states.complete_downloading(
        db, vid, original_key=keys.source_original_key(vid, "mp4"), fps=10.0
    )
    states.start_splicing(db, vid)
    return states.create_clips_from_splice(
        db, vid, [states.ClipSpec(i * 10, i * 10 + 10) for i in range(clips)]
    )


def _store(db: Database, ids: list[int], vecs: np.ndarray, model: str = MODEL) -> None:
    """One multi-row INSERT (the embed step's upsert, without its state change), rows in a
    shuffled order: the space then comes out of Postgres in no particular id order, as a big
    table (hash join) returns it, and the pairs must still be (smaller id, larger id)."""
    rows = [
        {
            "clip_id": cid,
            "model_name": model,
            "generation_strategy": STRATEGY,
            "dimension": vecs.shape[1],
            "embedding": v.tolist(),
        }
        for cid, v in zip(ids, vecs, strict=True)
    ]
    np.random.default_rng(len(rows)).shuffle(rows)  # type: ignore[arg-type]
    with db.session() as s:
        s.execute(insert(ClipEmbedding), rows)


def _random(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _near(rng: np.random.Generator, v: np.ndarray, distance: float) -> np.ndarray:
    """A unit vector at exactly ``distance`` (cosine) from unit vector ``v``."""
    u = rng.standard_normal(v.shape)
    u -= u @ v * v
    u /= np.linalg.norm(u)
    cos = 1.0 - distance
    return cos * v + np.sqrt(1.0 - cos * cos) * u


def _supersede(db: Database, ids: list[int]) -> None:
    """What a merge/split does to the old clips (states.review._supersede), without the media."""
    with db.session() as s:
        s.execute(
            update(Clip).where(Clip.id.in_(ids)).values(state="archived", superseded_at=func.now())
        )


def _pairs(found: list[similarity.DuplicatePair]) -> list[tuple[int, int]]:
    return [(p.a.clip_id, p.b.clip_id) for p in found]


@pytest.fixture
def planted(db: Database) -> dict[str, Any]:
    """Three videos of random clips; planted: a same-video pair (0.001), a cross-video pair
    (0.004), a cross-video pair (0.012); two superseded clips that are exact copies of live
    ones (and of each other); a clip of another model identical to a planted one."""
    rng = np.random.default_rng(7)
    v1, v2, v3 = _video(db, 40), _video(db, 40), _video(db, 40)
    ids = v1 + v2 + v3
    vecs = _random(rng, len(ids))
    at = {cid: i for i, cid in enumerate(ids)}
    plan = [(v1[0], v1[1], 0.001), (v1[5], v2[7], 0.004), (v2[3], v3[9], 0.012)]
    for a, b, d in plan:
        vecs[at[b]] = _near(rng, vecs[at[a]], d)
    gone = [v3[20], v3[21]]
    vecs[at[gone[0]]] = vecs[at[v1[30]]]
    vecs[at[gone[1]]] = vecs[at[v1[30]]]
    _store(db, ids, vecs)
    _store(db, [v1[30]], vecs[[at[v1[0]]]], model="test/other")
    _supersede(db, gone)
    return {"plan": plan, "videos": (v1, v2, v3), "gone": gone, "vecs": vecs, "ids": ids}


@pytest.mark.parametrize("engine", ENGINES)
def test_planted_pairs_found_exactly(db: Database, planted: dict[str, Any], engine: str) -> None:
    found = duplicates.find_near_duplicates(db, 0.02, MODEL, STRATEGY, engine=engine)
    plan = planted["plan"]
    assert _pairs(found.pairs) == [(a, b) for a, b, _ in plan]  # closest first
    assert [p.distance for p in found.pairs] == pytest.approx([d for *_, d in plan], abs=1e-6)
    v1 = planted["videos"][0]
    assert [p.to_dict()["same_video"] for p in found.pairs] == [True, False, False]
    first = found.pairs[0].to_dict()
    assert set(first) == {"a", "a_identifier", "b", "b_identifier", "same_video", "distance"}
    assert first["a"] == v1[0] and first["a_identifier"].startswith(
        f"{found.pairs[0].a.source_video_id}_"
    )
    assert found.pairs[0].a.state == "spliced"
    assert found.clips == 118 and found.queried == 118  # 120 clips, 2 superseded
    assert found.engine == ("exact" if engine == "exact" else "faiss-flat")
    gone = set(planted["gone"])
    loose = similarity.near_duplicates(db, 2.0, MODEL, STRATEGY, engine=engine, per_clip=20)
    assert not gone & {c for p in loose for c in (p.a.clip_id, p.b.clip_id)}
    assert similarity.near_duplicates(db, 0.02, "test/other", STRATEGY, engine=engine) == []
    assert similarity.near_duplicates(db, 0.02, "test/none", STRATEGY, engine=engine) == []


def test_planted_pairs_through_the_inverted_file(db: Database) -> None:
    """Approximate search (few cells probed) still finds every planted near-duplicate: a
    duplicate is the closest thing to its twin, so it shares its cell or the next one."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(9)
    ids = _video(db, 1500) + _video(db, 1500)
    centres = _random(rng, 60)
    vecs = centres[rng.integers(0, 60, 3000)] + 0.08 * rng.standard_normal((3000, DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = rng.choice(3000, 24, replace=False)
    plan = {}
    for a, b in zip(rows[::2], rows[1::2], strict=True):
        vecs[b] = _near(rng, vecs[a], 0.002)
        plan[(min(ids[a], ids[b]), max(ids[a], ids[b]))] = 0.002
    _store(db, ids, vecs)
    found = duplicates.find_near_duplicates(
        db, 0.01, MODEL, STRATEGY, engine="faiss", index="ivf", check_recall=300
    )
    assert found.engine == "faiss-ivf" and found.params["nprobe"] < found.params["nlist"]
    assert set(_pairs(found.pairs)) == set(plan)
    assert [p.distance for p in found.pairs] == pytest.approx([0.002] * 12, abs=1e-6)
    assert found.recall is not None and found.recall >= 0.95 and found.recall_sample == 300


def test_engines_agree_on_a_small_space(db: Database) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    ids = _video(db, 600)
    centres = _random(rng, 30, 24)
    vecs = centres[rng.integers(0, 30, 600)] + 0.05 * rng.standard_normal((600, 24))
    _store(db, ids, vecs)
    runs = {
        name: duplicates.find_near_duplicates(
            db, 0.08, MODEL, STRATEGY, per_clip=6, limit=100_000, **kw
        )
        for name, kw in {
            "exact": {"engine": "exact"},
            "flat": {"engine": "faiss", "index": "flat"},
            # every cell probed: the inverted file's scan is exhaustive, hence exact
            "ivf_all": {"engine": "faiss", "index": "ivf", "nprobe": 10_000},
        }.items()
    }
    reference = runs["exact"]
    assert len(reference.pairs) > 200
    for name, run in runs.items():
        assert _pairs(run.pairs) == _pairs(reference.pairs), name
        assert [p.distance for p in run.pairs] == [p.distance for p in reference.pairs], name
        assert run.candidates == reference.candidates
    assert runs["ivf_all"].engine == "faiss-ivf" and runs["ivf_all"].params["nlist"] >= 2
    # Distances are the cosine distances of the stored vectors.
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    at = {cid: i for i, cid in enumerate(ids)}
    p = reference.pairs[-1]
    assert p.distance == pytest.approx(1 - unit[at[p.a.clip_id]] @ unit[at[p.b.clip_id]], abs=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_incremental_only_pairs_with_new_clips(db: Database, engine: str) -> None:
    rng = np.random.default_rng(11)
    old = _video(db, 50)
    old_vecs = _random(rng, 50)
    old_vecs[1] = _near(rng, old_vecs[0], 0.002)  # old-old: not reported incrementally
    _store(db, old, old_vecs)
    since = max(old)
    new = _video(db, 30)
    new_vecs = _random(rng, 30)
    new_vecs[0] = _near(rng, old_vecs[10], 0.003)  # old-new
    new_vecs[2] = _near(rng, new_vecs[1], 0.005)  # new-new
    _store(db, new, new_vecs)

    every = similarity.near_duplicates(db, 0.01, MODEL, STRATEGY, engine=engine)
    assert _pairs(every) == [(old[0], old[1]), (old[10], new[0]), (new[1], new[2])]
    fresh = duplicates.find_near_duplicates(
        db, 0.01, MODEL, STRATEGY, engine=engine, since_clip_id=since
    )
    assert _pairs(fresh.pairs) == [(old[10], new[0]), (new[1], new[2])]
    assert fresh.queried == 30 and fresh.clips == 80
    listed = similarity.near_duplicates(db, 0.01, MODEL, STRATEGY, engine=engine, clip_ids=[new[0]])
    assert _pairs(listed) == [(old[10], new[0])]
    assert similarity.near_duplicates(db, 0.01, MODEL, STRATEGY, since_clip_id=max(new)) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_threshold_limit_and_per_clip(db: Database, engine: str) -> None:
    rng = np.random.default_rng(5)
    ids = _video(db, 60)
    vecs = _random(rng, 60)
    # A group of five near-copies of clip 0 at 0.001 .. 0.005 from it.
    for j in range(1, 5):
        vecs[j] = _near(rng, vecs[0], 0.001 * j)
    _store(db, ids, vecs)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    group = ids[:5]
    want = sorted(
        (1 - unit[i] @ unit[j], group[i], group[j]) for i in range(5) for j in range(i + 1, 5)
    )

    def run(threshold: float, **kw: Any) -> list[similarity.DuplicatePair]:
        return similarity.near_duplicates(db, threshold, MODEL, STRATEGY, engine=engine, **kw)

    full = run(0.05)
    assert _pairs(full) == [(a, b) for _, a, b in want]  # all 10 pairs, closest first
    assert [p.distance for p in full] == pytest.approx([d for d, *_ in want], abs=1e-6)
    assert _pairs(run(0.05, limit=3)) == _pairs(full)[:3]
    assert run(0.05, limit=0) == []
    cut = (want[3][0] + want[4][0]) / 2
    assert _pairs(run(cut)) == [(a, b) for _, a, b in want[:4]]
    assert run(0.0005) == []
    # per_clip=1: each clip keeps only its nearest; the pairs are the union of those edges.
    nearest = {}
    for i in range(5):
        j = min((j for j in range(5) if j != i), key=lambda j: 1 - unit[i] @ unit[j])
        nearest[tuple(sorted((group[i], group[j])))] = 1 - unit[i] @ unit[j]
    one = run(0.05, per_clip=1)
    assert set(_pairs(one)) == set(nearest) and len(one) < len(full)


def test_recall_of_the_inverted_file_on_random_vectors() -> None:
    """Structureless random vectors are the hard case of an inverted file: the tuning has to
    probe many cells to reach the target, and the recall check must confirm it."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = _random(rng, 20_000, 64).astype(np.float32)
    graph = knn.knn_graph(x, 10, engine="faiss", index="ivf")
    assert graph.engine == "faiss-ivf" and graph.params["tune_recall"] >= ivf.TARGET_RECALL
    recall, checked = knn.graph_recall(x, graph, 500)
    assert checked == 500 and recall >= 0.95


def test_recall_of_the_inverted_file_on_clustered_vectors() -> None:
    """Embeddings cluster (scenes, videos): there a few cells suffice, so the pass is truly
    approximate (most vectors never compared) and still above the recall target."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    centres = _random(rng, 400, 64)
    x = centres[rng.integers(0, 400, 20_000)] + 0.06 * rng.standard_normal((20_000, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    graph = knn.knn_graph(x, 10)  # auto: 20k x 20k is past the exact search's budget
    assert graph.engine == "faiss-ivf"
    assert 2 * graph.params["nprobe"] <= graph.params["nlist"]
    # rows near a boundary sit in two cells; none is anyone's neighbour twice, nor its own
    ranked = np.sort(graph.neighbours, axis=1)
    assert not ((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] >= 0)).any()
    assert not (graph.neighbours == graph.queries[:, None]).any()
    recall, _ = knn.graph_recall(x, graph, 500)
    assert recall >= 0.95


def test_recall_at_k_counts_ties_and_missing() -> None:
    exact = np.array([[0.1, 0.2, 0.3], [0.0, 0.0, np.inf]], dtype=np.float32)
    found = np.array([[5, 6, 7], [1, -1, -1]])
    found_d = np.array([[0.1, 0.3, 0.9], [0.0, np.inf, np.inf]], dtype=np.float32)
    assert knn.recall_at_k(found, exact, found_d) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_without_faiss_the_exact_engine_runs(
    db: Database, planted: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knn, "faiss_module", lambda: None)
    found = duplicates.find_near_duplicates(db, 0.02, MODEL, STRATEGY, check_recall=30)
    assert found.engine == "exact" and len(found.pairs) == 3
    assert found.recall == 1.0 and found.recall_sample == 30
    with pytest.raises(InvalidInputError, match="faiss-cpu"):
        duplicates.find_near_duplicates(db, 0.02, MODEL, STRATEGY, engine="faiss")
    with pytest.raises(InvalidInputError, match="ivf"):
        duplicates.find_near_duplicates(db, 0.02, MODEL, STRATEGY, index="ivf")
    with pytest.raises(InvalidInputError):
        duplicates.find_near_duplicates(db, 0.02, MODEL, STRATEGY, engine="gpu")


def test_binary_copy_loads_the_live_space(db: Database, planted: dict[str, Any]) -> None:
    space = vectors.load_space(db, MODEL, STRATEGY, DIM)
    ids, vecs = planted["ids"], planted["vecs"]
    live = [i for i, cid in enumerate(ids) if cid not in set(planted["gone"])]
    # Rows come in heap order (not sorted): compare as sets, aligned by id.
    order = np.argsort(space.ids)
    assert space.ids[order].tolist() == [ids[i] for i in live]
    want = vecs[live] / np.linalg.norm(vecs[live], axis=1, keepdims=True)
    np.testing.assert_allclose(space.vectors[order], want, atol=1e-6)
    assert space.vectors.dtype == np.float32 and space.dropped_zero == 0
    # A zero vector has no direction: left out (pgvector's cosine distance is NaN for it).
    extra = _video(db, 1)
    _store(db, extra, np.zeros((1, DIM)))
    again = vectors.load_space(db, MODEL, STRATEGY, DIM)
    assert again.dropped_zero == 1 and len(again) == len(space)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ClipEmbedding)) == len(ids) + 2


def test_cli_near_duplicates(
    db: Database, planted: dict[str, Any], pg_server: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    from typer.testing import CliRunner

    from heaters_resources.cli.main import app

    monkeypatch.setenv("HEATERS_DATABASE_URL", pg_server.url)
    monkeypatch.setenv("HEATERS_HOME", str(tmp_path))
    args = ["near-duplicates", "--threshold", "0.02", "--model", "test/dups", "--json"]
    result = CliRunner().invoke(app, [*args, "--check-recall", "20", "--engine", "exact"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [(a, b) for a, b, _ in planted["plan"]]
    assert [p["same_video"] for p in out["pairs"]] == [True, False, False]
    assert out["engine"] == "exact" and out["recall"] == 1.0 and out["recall_sample"] == 20
    assert set(out["seconds"]) >= {"load", "search", "pairs", "recall", "total"}
    since = max(planted["videos"][1])  # only clips of video 3 are new: the third pair
    result = CliRunner().invoke(app, [*args, "--since-clip-id", str(since)])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [tuple(planted["plan"][2][:2])]
    bad = CliRunner().invoke(app, [*args, "--engine", "gpu"])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["status"] == "error"
