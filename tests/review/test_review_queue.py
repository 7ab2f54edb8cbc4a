"""The clip list (`/queue`, `/api/clips`), batch actions and their one undo, reopening skipped
clips, named reviewers, database claims, the side-by-side merge with a reviewed neighbour, and
notices that are not in the URL (issue 14), over HTTP on a real Postgres.

Clips are rows made through the state machine with small fake objects, as in
test_review_app.py; the browser tests of the same pages are in test_review_grid_browser.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from starlette.testclient import TestClient

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import ClipEmbedding, ReviewClaim, Reviewer, ReviewEvent
from heaters_resources.review import ReviewConfig, create_app
from heaters_resources.review.reviewers import COOKIE as REVIEWER_COOKIE
from heaters_resources.states.core import CLIPS
from heaters_resources.store.objects import LocalObjectStore
from tests.review.test_review_app import BASE, ORIGIN, TOKEN, act, client, events, make_clips, page

FIVE_MINUTES = timedelta(seconds=300)  # ReviewConfig.claim_seconds
SPANS = ((0, 50), (50, 100), (100, 150), (150, 200), (200, 250))


def headers(p: dict[str, str]) -> dict[str, str]:
    return {**ORIGIN, "X-CSRF-Token": p["csrf"], "Accept": "application/json"}


def batch(c: TestClient, p: dict[str, str], action: str, items: list[tuple[int, str]]) -> Any:
    body = {"clips": [f"{cid}|{version}" for cid, version in items]}
    return c.post(f"/api/batch/{action}", json=body, headers=headers(p))


def version(db: Database, clip_id: int) -> str:
    clip = states.get_clip(db, clip_id)
    return states.clip_version(clip.state, clip.updated_at)


def name_as(c: TestClient, name: str) -> Any:
    return c.post("/api/reviewer", json={"name": name}, headers=headers(page(c)))


def all_pages(c: TestClient, query: str) -> list[dict[str, Any]]:
    """Every clip of /api/clips?{query}, following `next` with pages of 2."""
    found: list[dict[str, Any]] = []
    after = ""
    for _ in range(50):
        r = c.get(f"/api/clips?limit=2&{query}{after}")
        assert r.status_code == 200, r.text
        found += r.json()["clips"]
        if r.json()["next"] is None:
            return found
        after = f"&after={r.json()['next']}"
    raise AssertionError("pagination did not end")


def test_api_clips_filters_and_keyset_pages(db: Database, local_store: LocalObjectStore) -> None:
    a = make_clips(db, local_store, spans=SPANS, title="first")
    b = make_clips(db, local_store, spans=((0, 30), (30, 40), (40, 90)), title="second")
    with db.session() as s:  # clip b[1] is the clip of a short shot
        s.execute(update(CLIPS).where(CLIPS.c.id == b[1]).values(short=True))
    states.skip_clip(db, a[1], "alice")
    states.approve_clip(db, a[2], "alice")
    states.archive_clip(db, a[3], "bob")
    states.approve_clip(db, b[2], "alice")
    states.undo_review(db, b[2], "alice")
    states.store_embedding(db, a[0], [1.0, 0.0], model_name="t/m", generation_strategy="mid")
    c = client(db, local_store)
    ids = [row["id"] for row in all_pages(c, "")]
    assert ids == [*a, b[0], b[2]]  # (video, frame) order, each once, short shots left out
    assert [r["id"] for r in all_pages(c, "short=any")] == [*a, *b]
    assert [r["id"] for r in all_pages(c, "short=yes")] == [b[1]]
    assert [r["id"] for r in all_pages(c, "state=skipped")] == [a[1]]
    assert [r["id"] for r in all_pages(c, "video=2")] == [b[0], b[2]]
    assert [r["id"] for r in all_pages(c, "embedded=yes")] == [a[0]]
    assert a[0] not in [r["id"] for r in all_pages(c, "embedded=no")]
    assert [r["id"] for r in all_pages(c, "reviewer=alice")] == [a[1], a[2]]  # undo: not b[2]
    assert [r["id"] for r in all_pages(c, "reviewer=bob&state=archived")] == [a[3]]
    first = c.get("/api/clips?limit=3").json()
    row = first["clips"][1]
    assert (row["state"], row["reviewer"], row["last_action"]) == ("skipped", "alice", "skip")
    assert row["sprite"]["cols"] == 5 and row["keyframe_id"] and row["version"].startswith("skip")
    progress = {v["video_id"]: v for v in first["videos"]}
    assert (progress[1]["reviewed"], progress[1]["total"], progress[1]["pending"]) == (3, 5, 2)
    html = c.get("/queue?video=2&short=any").text
    assert "reviewed <b>0</b> of 2" in html and "(+1 short)" in html
    for bad in ("state=bogus", "limit=0", "limit=201", "after=abc", "after=1.2", "video=-1"):
        r = c.get(f"/api/clips?{bad}")
        assert r.status_code == 400, bad
        assert c.get(f"/queue?{bad}").status_code == 400, bad


def test_reopen_a_skipped_clip_from_the_queue_and_undo_it(
    db: Database, local_store: LocalObjectStore
) -> None:
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    p = page(c)
    assert act(c, p, "skip").json()["ok"]
    listed = c.get("/queue?state=skipped").text
    assert f'action="/api/clips/{ids[0]}/reopen"' in listed
    form = {"csrf_token": p["csrf"], "version": version(db, ids[0])}
    back = "/queue?state=skipped"
    r = c.post(
        f"/api/clips/{ids[0]}/reopen",
        data={**form, "return_to": back},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == back
    assert states.get_clip(db, ids[0]).state == "pending_review"
    assert "Reopened" in c.get(back).text and "Reopened:" not in c.get(back).text  # one shot
    stale = c.post(f"/api/clips/{ids[0]}/reopen", data=form, headers=ORIGIN)
    assert "Refused" in stale.text and "changed since the page was loaded" in stale.text
    pending = {"version": version(db, ids[1])}
    r = c.post(f"/api/clips/{ids[1]}/reopen", json=pending, headers=headers(p))
    assert r.status_code == 409 and "is pending_review now" in r.json()["message"]
    u = c.post("/api/undo", json={}, headers=headers(p)).json()
    assert u["ok"] and u["message"] == "Undone: the clip is skipped again."
    assert states.get_clip(db, ids[0]).state == "skipped"
    assert [a for a, _ in events(db)] == ["skip", "reopen", "undo"]
    evil = {**form, "version": version(db, ids[0]), "return_to": "//evil.example/queue"}
    r = c.post(f"/api/clips/{ids[0]}/reopen", data=evil, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"  # never another site


def test_batch_is_one_event_per_clip_and_one_undo(
    db: Database, local_store: LocalObjectStore
) -> None:
    ids = make_clips(db, local_store, spans=SPANS)
    c = client(db, local_store)
    p = page(c)
    items = [(cid, version(db, cid)) for cid in ids[:4]]
    states.skip_clip(db, ids[3], "someone else")  # changed after the grid was shown
    r = batch(c, p, "approve", items)
    assert r.status_code == 200 and r.json()["done"] == ids[:3], r.text
    assert "changed since the page was loaded" in r.json()["refused"][str(ids[3])]
    assert r.json()["message"].startswith("Approved 3 clips. 1 refused")
    with db.session() as s:
        rows = s.execute(
            select(ReviewEvent.clip_ids, ReviewEvent.payload, ReviewEvent.id).where(
                ReviewEvent.action == "approve"
            )
        ).all()
    assert sorted(c for r in rows for c in r.clip_ids) == ids[:3]
    assert len({r.payload["batch"] for r in rows}) == 1
    assert all(r.id > r.payload["batch"] for r in rows)
    panel = c.get("/progress").text
    assert "Approved · 3 clips" in panel and "pending_review → approved" in panel
    assert batch(c, p, "approve", items[:1]).json()["kind"] == "stale"  # no double action
    u = c.post("/api/undo", json={}, headers=headers(p)).json()
    assert u["ok"] and u["message"] == "Undone: 3 clips are back in the queue."
    assert [states.get_clip(db, i).state for i in ids[:3]] == ["pending_review"] * 3
    assert [a for a, _ in events(db)].count("undo") == 3
    # A batch whose clip moved on (embedded) is refused as a whole, nothing changed.
    r = batch(c, p, "approve", [(cid, version(db, cid)) for cid in ids[:2]])
    assert r.json()["ok"]
    states.start_embedding(db, ids[1])
    states.complete_embedding(db, ids[1], [1.0, 0.0], model_name="t/m", generation_strategy="m")
    u = c.post("/api/undo", json={}, headers=headers(p)).json()
    assert not u["ok"] and f"clip {ids[1]}: the clip is now embedded" in u["message"]
    assert [states.get_clip(db, i).state for i in ids[:2]] == ["approved", "embedded"]
    for body in ({"clips": []}, {"clips": ["x|y"]}, {"clips": [f"{ids[4]}|v" for _ in range(501)]}):
        r = c.post("/api/batch/approve", json=body, headers=headers(p))
        assert r.status_code == 422 and "id|version" in r.json()["message"]
    r = batch(c, p, "merge", [(ids[4], version(db, ids[4]))])
    assert r.status_code == 422 and states.get_clip(db, ids[4]).state == "pending_review"
    # Without the script: the grid's checkboxes are one repeated form field.
    picked = [f"{cid}|{version(db, cid)}" for cid in (ids[2], ids[4])]
    form = {"csrf_token": p["csrf"], "clips": picked, "return_to": "/grid?video=1"}
    r = c.post("/api/batch/skip", data=form, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/grid?video=1"
    assert "Skipped 2 clips." in c.get("/grid").text
    assert [states.get_clip(db, i).state for i in (ids[2], ids[4])] == ["skipped", "skipped"]


def test_new_posts_need_csrf_and_this_origin(db: Database, local_store: LocalObjectStore) -> None:
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    p = page(c)
    clip = f"{ids[0]}|{p['version']}"
    posts = [
        ("/api/batch/approve", {"clips": [clip]}),
        ("/api/reviewer", {"name": "mallory"}),
        (f"/api/clips/{ids[0]}/reopen", {"version": p["version"]}),
    ]
    for url, body in posts:
        for bad in (
            {"X-CSRF-Token": p["csrf"]},  # no Origin
            {"Origin": "http://evil.example", "X-CSRF-Token": p["csrf"]},
            ORIGIN,  # no CSRF token
            {**ORIGIN, "X-CSRF-Token": "0" * 40},
        ):
            assert c.post(url, json=body, headers=bad).status_code == 403, (url, bad)
        stranger = TestClient(create_app(db, local_store), base_url=BASE)  # no session
        assert stranger.post(url, json=body, headers=headers(p)).status_code == 403
    assert events(db) == [] and states.get_clip(db, ids[0]).state == "pending_review"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Reviewer)) == 0


def test_a_named_reviewer_outlives_the_browser_session(
    db: Database, local_store: LocalObjectStore
) -> None:
    ids = make_clips(db, local_store)
    app = create_app(db, local_store)
    first = client(db, local_store, app=app)
    named = name_as(first, "Dana K.")
    assert named.json()["ok"] and "Max-Age=34560000" in named.headers["set-cookie"]
    assert act(first, page(first), "approve").json()["ok"]
    assert events(db) == [("approve", [ids[0]])]
    # A new browser session (the session cookie is gone) that kept the reviewer cookie.
    later = client(db, local_store, app=app)
    later.cookies.set(REVIEWER_COOKIE, first.cookies[REVIEWER_COOKIE])
    p = page(later)
    assert 'value="Dana K."' in p["html"] and "pending_review → approved" in p["html"]
    u = later.post("/api/undo", json={}, headers=headers(p)).json()
    assert u["ok"] and states.get_clip(db, ids[0]).state == "pending_review"
    with db.session() as s:
        actors = list(s.scalars(select(ReviewEvent.actor).order_by(ReviewEvent.id)))
    assert actors == ["Dana K.", "Dana K."]
    for bad in ("", " ", "x" * 81, "<script>", "a\x00b", "_x"):
        assert name_as(later, bad).status_code == 422, bad
    forged = client(db, local_store, app=app)
    forged.cookies.set(REVIEWER_COOKIE, "0" * 32)
    assert 'value="reviewer"' in page(forged)["html"]  # an unknown key is nobody
    # With a token (several people), a browser's default name is its own, kept at its first
    # action.
    shared = create_app(db, local_store, ReviewConfig(token=TOKEN))
    t = TestClient(shared, base_url=BASE)
    t.get(f"/?token={TOKEN}")
    tp = page(t)
    assert act(t, tp, "skip").json()["ok"]
    with db.session() as s:
        names = set(s.scalars(select(Reviewer.name)))
        last_actor = s.scalar(select(ReviewEvent.actor).order_by(ReviewEvent.id.desc()))
    assert last_actor in names and str(last_actor).startswith("reviewer@web-")


def test_claims_are_rows_with_an_expiry_shared_by_processes(
    db: Database, local_store: LocalObjectStore
) -> None:
    ids = make_clips(db, local_store)
    one, two = create_app(db, local_store), create_app(db, local_store)  # two processes
    a, b = client(db, local_store, app=one), client(db, local_store, app=two)
    with db.session() as s:
        before = s.scalar(select(func.clock_timestamp()))
    assert (page(a)["clip"], page(b)["clip"]) == (str(ids[0]), str(ids[1]))
    with db.session() as s:
        claims = dict(s.execute(select(ReviewClaim.clip_id, ReviewClaim.expires_at)).all())
        after = s.scalar(select(func.clock_timestamp()))
    assert set(claims) == {ids[0], ids[1]}
    assert all(before + FIVE_MINUTES <= t <= after + FIVE_MINUTES for t in claims.values())
    assert "(1 open elsewhere)" in page(a)["html"]
    with db.session() as s:  # both claims run out: the clips are free again
        s.execute(text("UPDATE review_claims SET expires_at = now() - interval '1 second'"))
    c = client(db, local_store, app=two)
    assert page(c)["clip"] == str(ids[0])
    pa = page(a)
    assert pa["clip"] == str(ids[1])
    assert act(a, pa, "approve").json()["ok"]  # an action releases its clip's claim
    with db.session() as s:
        assert set(s.scalars(select(ReviewClaim.clip_id))) == {ids[0]}


def test_merge_side_by_side_with_an_embedded_neighbour(
    db: Database, local_store: LocalObjectStore
) -> None:
    ids = make_clips(db, local_store)
    states.approve_clip(db, ids[0], "r")
    states.start_embedding(db, ids[0])
    states.complete_embedding(db, ids[0], [1.0, 0.0], model_name="t/m", generation_strategy="m")
    c = client(db, local_store)
    p = page(c, f"/?clip={ids[1]}")
    assert re.search(r'id="btn-merge"\s+disabled', p["html"]) is None  # embedded: mergeable
    shown = c.get(f"/merge?clip={ids[1]}").text
    assert "1_0_50" in shown and "1_50_100" in shown and "is embedded" in shown
    previous = {"previous": str(ids[0]), "previous_version": version(db, ids[0])}
    wrong = act(c, p, "merge", previous=str(ids[2]), previous_version=version(db, ids[2]))
    assert wrong.status_code == 409 and "changed since the page was loaded" in wrong.text
    assert act(c, p, "merge", previous="x", previous_version="v").status_code == 422
    r = act(c, p, "merge", **previous)
    assert r.json()["ok"], r.text
    assert [states.get_clip(db, i).state for i in ids[:2]] == ["merging", "merging"]
    assert c.post("/api/undo", json={}, headers=headers(p)).json()["ok"]
    assert [states.get_clip(db, i).state for i in ids[:2]] == ["embedded", "pending_review"]
    p = page(c, f"/?clip={ids[1]}")
    previous["previous_version"] = version(db, ids[0])
    assert act(c, p, "merge", **previous).json()["ok"]
    new_id = states.complete_merge(db, ids[:2])  # what the review job does
    with db.session() as s:
        vectors = list(s.scalars(select(ClipEmbedding.clip_id)))
    assert vectors == [] and states.get_clip(db, new_id).state == "spliced"  # embedded anew


def test_disabled_actions_say_why_in_text(db: Database, local_store: LocalObjectStore) -> None:
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    html = page(c)["html"]
    assert 'id="why-merge">Merge: first clip of its video: nothing to merge with.' in html
    states.approve_clip(db, ids[1], "r")
    html = page(c, f"/?clip={ids[1]}")["html"]
    assert "Approve, skip, archive: the clip is approved, not pending review." in html
    assert 'class="notice quiet"' in html  # the notice's room is kept, invisible
