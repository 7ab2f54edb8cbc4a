"""The library page (issue 14, item 5): approved clips as a grid with keyset pages, filters,
"more like this" in any space a clip has vectors in, text search through a real (tiny, random)
CLIP model saved as a folder, and the selection's manifest; over HTTP on a real Postgres."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.search import similarity
from heaters_resources.search.index import ensure_hnsw_index
from heaters_resources.store.objects import LocalObjectStore
from tests.review.test_review_app import client, make_clips
from tests.tiny_models import build_tiny_models

SPANS = ((0, 50), (50, 100), (100, 150), (150, 200))


def library(db: Database, store: LocalObjectStore) -> tuple[list[int], list[int]]:
    """Two videos; clips 0-2 of the first and 0-1 of the second approved, the rest pending."""
    a = make_clips(db, store, spans=SPANS, title="first")
    b = make_clips(db, store, spans=SPANS, title="second")
    for cid in [*a[:3], *b[:2]]:
        states.approve_clip(db, cid, "alice")
    return a, b


def api(c: Any, query: str = "") -> dict[str, Any]:
    r = c.get(f"/api/library?{query}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_many_videos_make_the_video_filter_a_number_field(
    db: Database, local_store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past 500 videos the filter is not a list (listing.videos answers None)."""
    from heaters_resources.review import listing

    library(db, local_store)
    monkeypatch.setattr(listing, "videos", lambda db, limit=500: None)
    html = client(db, local_store).get("/library?video=2").text
    assert '<input name="video" inputmode="numeric" size="6" value="2">' in html


def test_browse_pages_and_filters(db: Database, local_store: LocalObjectStore) -> None:
    a, b = library(db, local_store)
    c = client(db, local_store)
    assert [x["id"] for x in api(c)["clips"]] == [*a[:3], *b[:2]]  # never a pending clip
    first = api(c, "limit=2")
    assert [x["id"] for x in first["clips"]] == a[:2] and first["next"]
    second = api(c, f"limit=2&after={first['next']}")
    assert [x["id"] for x in second["clips"]] == [a[2], b[0]]
    assert [
        x["id"]
        for x in api(c, f"video={b[0] and states.get_clip(db, b[0]).source_video_id}")["clips"]
    ] == b[:2]
    states.store_embedding(db, a[0], [1.0, 0.0], model_name="t/m", generation_strategy="mid")
    html = c.get("/library").text
    assert html.count('class="tile"') == 5 and "more like this" in html
    assert 'href="/library"' in c.get("/").text  # in the navigation of every page
    for bad in (
        "state=pending_review",
        "like=abc",
        "video=-1",
        "limit=0",
        "after=x",
        "q=" + "w" * 201,
    ):
        assert c.get(f"/library?{bad}").status_code == 400, bad
    assert c.get("/api/library?q=cat&like=1").status_code == 400


def test_more_like_this_in_the_clips_own_space(db: Database, local_store: LocalObjectStore) -> None:
    a, b = library(db, local_store)
    vectors = {
        a[0]: [1.0, 0.0, 0.0],
        a[1]: [0.0, 1.0, 0.0],
        b[0]: [0.95, 0.05, 0.0],
        b[1]: [0.7, 0.7, 0.0],
        a[3]: [1.0, 0.01, 0.0],  # pending: not in the library
    }
    for cid, vec in vectors.items():
        states.store_embedding(db, cid, vec, model_name="t/m", generation_strategy="mid")
    states.store_embedding(db, a[0], [0.0, 1.0], model_name="t/other", generation_strategy="mid")
    c = client(db, local_store)
    found = api(c, f"like={a[0]}")
    assert found["mode"] == "like" and found["model"] in ("t/m", "t/other")
    assert found["models"] == ["t/m", "t/other"]
    found = api(c, f"like={a[0]}&model=t/m")
    assert [x["id"] for x in found["clips"]] == [b[0], b[1], a[1]]  # nearest first, no pending
    distances = [x["distance"] for x in found["clips"]]
    assert distances == sorted(distances) and distances[0] < 0.01
    same = api(c, f"like={a[0]}&model=t/m&video={states.get_clip(db, a[0]).source_video_id}")
    assert [x["id"] for x in same["clips"]] == [a[1]]
    assert "has no embedding yet" in api(c, f"like={a[2]}")["notice"]
    assert "has no x/y vector" in api(c, f"like={a[0]}&model=x/y")["notice"]
    assert "does not exist" in api(c, "like=999999")["notice"]
    html = c.get(f"/library?like={a[0]}&model=t/m").text
    assert html.index(f'data-clip="{b[0]}"') < html.index(f'data-clip="{a[1]}"')


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))["clip"]


def test_text_search_through_a_clip_model(
    db: Database, local_store: LocalObjectStore, tiny_clip: Path
) -> None:
    a, b = library(db, local_store)
    c = client(db, local_store)
    assert "needs clips embedded with a CLIP model" in api(c, "q=a rabbit")["notice"]
    from heaters_media.embed import embed_text

    model = str(tiny_clip)  # a save_pretrained folder is a model name of its own
    dim = embed_text(["x"], model=model, offline=True).dimension
    rng = np.random.default_rng(3)
    for cid in [*a, *b]:
        vec = rng.normal(size=dim)
        states.store_embedding(
            db,
            cid,
            (vec / np.linalg.norm(vec)).tolist(),
            model_name=model,
            generation_strategy="keyframe_multi_avg",
        )
    ensure_hnsw_index(db, model, dim)
    found = api(c, "q=a rabbit in the grass")
    assert found["mode"] == "text" and found["model"] == model and not found["notice"]
    library_ids = {*a[:3], *b[:2]}
    expected = [
        int(n.clip_id)
        for n in similarity.search_text(db, "a rabbit in the grass", 48, model, offline=True)
        if n.clip_id in library_ids
    ]
    assert [x["id"] for x in found["clips"]] == expected and set(expected) == library_ids
    html = c.get("/library?q=a+rabbit+in+the+grass").text
    assert "matching “a rabbit in the grass”" in html and html.count('class="tile"') == 5
    assert "is not a CLIP model" in api(c, "q=cat&model=t/m")["notice"]


def test_selection_exports_the_manifest(
    db: Database,
    local_store: LocalObjectStore,
    tmp_path: Path,
    pg_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = library(db, local_store)
    c = client(db, local_store)
    r = c.get(f"/api/library/export?clip={b[1]}&clip={a[0]}&clip={a[3]}")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [row["clip_id"] for row in rows] == [a[0], b[1]]  # the pending clip is not exported
    assert rows[0]["keyframe_keys"] and rows[0]["storage_key"]
    for bad in ("", "?clip=x", "?clip=" + "9" * 19, "?" + "&".join(["clip=1"] * 1001)):
        assert c.get(f"/api/library/export{bad}").status_code == 400, bad
    # The same rows from the CLI, for the same selection.
    from heaters_resources.cli.main import app

    monkeypatch.setenv("HEATERS_DATABASE_URL", db.url)
    monkeypatch.setenv("HEATERS_HOME", str(tmp_path))
    out = tmp_path / "selection.jsonl"
    result = CliRunner().invoke(app, ["export", str(out), "--clip", str(b[1]), "--clip", str(a[0])])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_a_clip_without_a_vector_gets_a_hint_that_works(
    db: Database, local_store: LocalObjectStore
) -> None:
    """`heaters similar` on a clip without a vector used to suggest `embed-missing`, which only
    embeds approved clips: the hint now depends on the clip's state."""
    from heaters_resources.errors import NotFoundError
    from heaters_resources.search.space import DESCRIPTOR_MODEL

    a, _ = library(db, local_store)  # a[0] approved, a[3] pending

    def hint(clip: int, model: str) -> str:
        with pytest.raises(NotFoundError) as found:
            similarity.similar_clips(db, clip, 3, model, "keyframe_multi_avg")
        return str(found.value)

    assert "heaters embed-missing --model t/m" in hint(a[0], "t/m")
    assert "ready for review (HEATERS_REVIEW_SIMILAR)" in hint(a[3], DESCRIPTOR_MODEL)
    assert "only approved clips are embedded with t/m" in hint(a[3], "t/m")
