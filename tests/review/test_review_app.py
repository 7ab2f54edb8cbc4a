"""The review web app over HTTP (Starlette's TestClient), on a real Postgres (embedded) and a
local object store: queue order, media ranges, actions, stale pages, undo, CSRF, Host, token.

Clips here are rows made through the state machine with small fake objects (fast); the browser
tests (test_review_browser.py) use the real sample video and real Dagster runs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from heaters_resources import states, steps
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ReviewEvent
from heaters_resources.review import ReviewConfig, check_bind, create_app
from heaters_resources.store.objects import LocalObjectStore

BASE = "http://127.0.0.1:8765"
TOKEN = "s3cret-s3cret-s3cret"
ORIGIN = {"Origin": BASE}
SPRITE_META = {
    "cols": 5,
    "rows": 2,
    "frame_count": 10,
    "tile_width": 48,
    "tile_height": 27,
    "sprite_fps": 5.0,
    "duration": 2.0,
}


def make_clips(
    db: Database,
    store: LocalObjectStore,
    spans: Sequence[tuple[int, int]] = ((0, 50), (50, 100), (100, 150)),
    title: str = "Test video",
) -> list[int]:
    """A video with clips in pending_review, each with a clip object, a keyframe and a sprite."""
    vid = states.create_source_video(db, f"/videos/{title}.mp4", title=title)
    states.start_downloading(db, vid)
    states.complete_downloading(
        db,
        vid,
        original_key=f"source_videos/{vid}/original.mp4",
        fps=25.0,
        frame_count=spans[-1][1],
        duration_s=spans[-1][1] / 25,
    )
    states.start_splicing(db, vid)
    ids = states.create_clips_from_splice(db, vid, [states.ClipSpec(a, b) for a, b in spans])
    states.start_keyframing_many(db, ids)
    kfs, sprites = {}, {}
    for cid in ids:
        clip = states.get_clip(db, cid)
        store.upload_bytes(bytes(range(256)) * 40, clip.storage_key or "")
        kf = f"clips/{vid}/{clip.identifier}/keyframes/multi_50.jpg"
        sp = f"clips/{vid}/{clip.identifier}/sprite/w48.jpg"
        store.upload_bytes(b"\xff\xd8kf", kf)
        store.upload_bytes(b"\xff\xd8sp", sp)
        kfs[cid] = [states.ArtifactSpec("keyframe", "multi", kf, tag="50", meta={"timestamp": 1.0})]
        sprites[cid] = [states.ArtifactSpec("sprite_sheet", "w48", sp, meta=SPRITE_META)]
    states.complete_keyframing_many(db, kfs)
    states.start_sprite_generation_many(db, ids)
    states.complete_sprite_generation_many(db, sprites)
    return ids


def client(
    db: Database, store: LocalObjectStore, config: ReviewConfig | None = None, app=None
) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app or create_app(db, store, config), base_url=BASE)


def page(c: TestClient, url: str = "/") -> dict[str, str]:
    """GET a queue page and pull out what the script would send back."""
    r = c.get(url)
    assert r.status_code == 200, r.text
    found = {
        "html": r.text,
        "csrf": re.search(r'name="csrf-token" content="([0-9a-f]+)"', r.text).group(1),
    }  # type: ignore[union-attr]
    clip = re.search(r'data-clip="(\d+)" data-version="([^"]+)"', r.text)
    if clip:
        found["clip"], found["version"] = clip.group(1), clip.group(2)
    return found


def act(c: TestClient, p: dict[str, str], action: str, **extra: object):  # type: ignore[no-untyped-def]
    return c.post(
        f"/api/clips/{p['clip']}/{action}",
        json={"version": p["version"], **extra},
        headers={**ORIGIN, "X-CSRF-Token": p["csrf"], "Accept": "application/json"},
    )


def undo(c: TestClient, p: dict[str, str]):  # type: ignore[no-untyped-def]
    return c.post(
        "/api/undo",
        json={},
        headers={**ORIGIN, "X-CSRF-Token": p["csrf"], "Accept": "application/json"},
    )


def events(db: Database) -> list[tuple[str, list[int]]]:
    with db.session() as s:
        return [
            (e.action, list(e.clip_ids))
            for e in s.scalars(select(ReviewEvent).order_by(ReviewEvent.id))
        ]


def test_queue_oldest_video_first_and_media_with_ranges(
    db: Database, local_store: LocalObjectStore
) -> None:
    first = make_clips(db, local_store, title="older")
    make_clips(db, local_store, spans=((0, 40),), title="newer")
    c = client(db, local_store)
    p = page(c)
    assert p["clip"] == str(first[0])
    html = p["html"]
    assert "older" in html and "0:00:00.00 → 0:00:02.00" in html and "4 pending" in html
    assert 'data-tiles="10"' in html and "background-size: 500% 200%" in html
    r = c.get(f"/media/clip/{first[0]}", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and len(r.content) == 100
    assert r.headers["content-range"] == "bytes 100-199/10240"
    assert r.headers["content-type"] == "video/mp4" and r.headers["accept-ranges"] == "bytes"
    assert c.get(f"/media/clip/{first[0]}").content == bytes(range(256)) * 40
    assert c.get("/media/artifact/999999").status_code == 404
    assert c.get("/media/clip/abc").status_code == 404


def test_approve_moves_on_and_a_stale_page_cannot_act_twice(
    db: Database, local_store: LocalObjectStore
) -> None:
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    p = page(c)
    r = act(c, p, "approve")
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert states.get_clip(db, ids[0]).state == "approved"
    assert page(c)["clip"] == str(ids[1])
    again = act(c, p, "approve")  # the same (stale) page clicks again
    assert again.status_code == 409 and again.json()["kind"] == "stale"
    assert "changed since the page was loaded" in again.json()["message"]
    assert events(db) == [("approve", [ids[0]])]
    # Undo puts the clip back in pending_review; the old page is still stale (new version).
    u = undo(c, p)
    assert u.json()["ok"] and u.json()["next"] == f"/?clip={ids[0]}"
    assert states.get_clip(db, ids[0]).state == "pending_review"
    assert act(c, p, "archive").status_code == 409
    assert [a for a, _ in events(db)] == ["approve", "undo"]


def test_merge_split_and_progress_panel(db: Database, local_store: LocalObjectStore) -> None:
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    first = page(c)
    assert re.search(r'id="btn-merge"\s+disabled', first["html"])  # first clip: none before
    assert act(c, first, "merge").status_code == 422
    p = page(c, f"/?clip={ids[1]}")
    r = act(c, p, "merge")
    assert r.json()["ok"], r.text
    assert [states.get_clip(db, i).state for i in ids[:2]] == ["merging", "merging"]
    panel = c.get("/progress").text
    assert "waiting for the Dagster run" in panel and "data-pending" in panel
    new_id = states.complete_merge(db, ids[:2])  # what the review job does
    panel = c.get("/progress").text
    assert "1_0_100" in panel and f'data-clip="{new_id}"' in panel
    p3 = page(c, f"/?clip={ids[2]}")
    bad = act(c, p3, "split", frame=100)  # must be strictly inside [100, 150)
    assert bad.status_code == 422 and "not inside" in bad.json()["message"]
    assert act(c, p3, "split", frame=120).json()["ok"]
    with db.session() as s:
        assert s.scalar(
            select(ReviewEvent.payload).where(ReviewEvent.action == "request_split")
        ) == {"frame": 120}
    # Undo after the merge job ran explains why it cannot.
    u = undo(c, p3)
    assert u.json()["ok"]  # the split was not carried out yet: undone
    u = undo(c, p3)
    assert not u.json()["ok"] and "already ran" in u.json()["message"]


def test_undo_after_archive_purge_explains(db: Database, local_store: LocalObjectStore) -> None:
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    p = page(c)
    assert act(c, p, "archive").json()["ok"]
    assert "files are deleted after the grace period" in c.get("/progress").text
    purged = steps.purge_archived_clips(db, local_store, [ids[0]])
    assert purged.clip_ids == [ids[0]]
    u = undo(c, p)
    assert u.status_code == 422
    assert "archive job already deleted its files" in u.json()["message"]
    assert "deleted by the archive job" in c.get("/progress").text
    assert states.get_clip(db, ids[0]).state == "archived"


def test_undo_refuses_when_another_reviewer_acted_later(
    db: Database, local_store: LocalObjectStore
) -> None:
    ids = make_clips(db, local_store)
    app = create_app(db, local_store)
    alice, bob = client(db, local_store, app=app), client(db, local_store, app=app)
    for who, name in ((alice, "alice"), (bob, "bob")):  # a loopback app's default is shared
        named = who.post(
            "/api/reviewer",
            json={"name": name},
            headers={**ORIGIN, "X-CSRF-Token": page(who)["csrf"], "Accept": "application/json"},
        )
        assert named.json()["ok"], named.text
    pa = page(alice)
    assert act(alice, pa, "skip").json()["ok"]
    pb = page(bob, f"/?clip={ids[0]}")
    assert act(bob, pb, "archive").json()["ok"]  # skipped clips may still be archived
    u = undo(alice, pa)
    assert not u.json()["ok"] and "changed by another action" in u.json()["message"]
    assert states.get_clip(db, ids[0]).state == "archived"
    assert undo(bob, pb).json()["ok"]  # bob's own undo works: back to skipped
    assert states.get_clip(db, ids[0]).state == "skipped"


def test_two_sessions_are_shown_different_clips(
    db: Database, local_store: LocalObjectStore
) -> None:
    ids = make_clips(db, local_store)
    app = create_app(db, local_store)
    a, b = client(db, local_store, app=app), client(db, local_store, app=app)
    pa, pb = page(a), page(b)
    assert (pa["clip"], pb["clip"]) == (str(ids[0]), str(ids[1]))
    assert page(a)["clip"] == pa["clip"]  # a reload keeps one's own clip
    assert act(a, pa, "approve").json()["ok"]
    assert page(a)["clip"] == str(ids[2])  # b still holds ids[1]
    shared = page(b, f"/?clip={ids[2]}")
    assert "Another reviewer has this clip open" in shared["html"]


def test_form_post_without_javascript(db: Database, local_store: LocalObjectStore) -> None:
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    p = page(c)
    r = c.post(
        f"/api/clips/{p['clip']}/skip",
        headers=ORIGIN,
        follow_redirects=False,
        data={"csrf_token": p["csrf"], "version": p["version"]},
    )
    assert r.status_code == 303 and r.headers["location"] == "/"  # the notice is not in it
    assert states.get_clip(db, ids[0]).state == "skipped"
    assert "Skipped." in c.get(r.headers["location"]).text
    assert "Skipped." not in c.get("/").text  # a reload shows no stale notice


def test_cross_site_posts_are_refused(db: Database, local_store: LocalObjectStore) -> None:
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    p = page(c)
    url = f"/api/clips/{ids[0]}/approve"
    body = {"version": p["version"]}
    assert c.post(url, json=body, headers={"X-CSRF-Token": p["csrf"]}).status_code == 403
    evil = {"Origin": "http://evil.example", "X-CSRF-Token": p["csrf"]}
    assert c.post(url, json=body, headers=evil).status_code == 403
    assert c.post(url, json=body, headers=ORIGIN).status_code == 403  # no CSRF token
    assert c.post(url, json=body, headers={**ORIGIN, "X-CSRF-Token": "0" * 40}).status_code == 403
    referer = {"Referer": f"{BASE}/", "X-CSRF-Token": p["csrf"], "Accept": "application/json"}
    stranger = TestClient(create_app(db, local_store), base_url=BASE)  # no session cookie
    assert stranger.post(url, json=body, headers=referer).status_code == 403
    assert states.get_clip(db, ids[0]).state == "pending_review" and events(db) == []
    assert c.post(url, json=body, headers=referer).json()["ok"]


def test_host_check_token_and_bind(db: Database, local_store: LocalObjectStore) -> None:
    make_clips(db, local_store)
    rebinding = TestClient(create_app(db, local_store), base_url="http://evil.example:8765")
    assert rebinding.get("/").status_code == 421
    with pytest.raises(ValueError, match="access token"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", TOKEN)
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(ValueError, match="at least 16 characters"):
        ReviewConfig(token="s3cret")
    with pytest.raises(ValueError, match="reviewer name must be 1 to 180 characters"):
        ReviewConfig(reviewer="r" * 181)  # review_events.actor would overflow on every action
    ReviewConfig(reviewer="r" * 180)
    app = create_app(db, local_store, ReviewConfig(token=TOKEN))
    c = TestClient(app, base_url="http://review.lan:8765")
    assert c.get("/").status_code == 401
    assert c.get("/media/clip/1").status_code == 401
    assert c.get("/?token=wrong").status_code == 401
    r = c.get(f"/?token={TOKEN}&clip=2", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?clip=2"
    assert c.get("/").status_code == 200 and c.get("/healthz").text == "ok"


def test_similar_clips_from_embeddings(db: Database, local_store: LocalObjectStore) -> None:
    ids = make_clips(db, local_store, spans=((0, 50), (50, 100), (100, 150), (150, 200)))
    vectors = {ids[0]: [1.0, 0.0, 0.0], ids[1]: [0.9, 0.1, 0.0], ids[2]: [0.0, 1.0, 0.0]}
    for cid, vec in vectors.items():
        states.store_embedding(db, cid, vec, model_name="test/model", generation_strategy="mid")
    c = client(db, local_store)
    html = page(c)["html"]
    similar = html[html.index("Similar clips") :]
    assert similar.index("1_50_100") < similar.index("1_100_150")
    assert "d=0.006" in similar
    assert "No embedding for this clip yet" in page(c, f"/?clip={ids[3]}")["html"]


def test_archive_near_duplicates_in_one_action(db: Database, local_store: LocalObjectStore) -> None:
    """Neighbours closer than 0.05 that still wait for a decision are offered for one archive
    (a form that works without a script); an approved near-duplicate is left alone."""
    spans = ((0, 50), (50, 100), (100, 150), (150, 200), (200, 250))
    ids = make_clips(db, local_store, spans=spans)
    vectors = {
        ids[0]: [1.0, 0.0, 0.0],
        ids[1]: [0.999, 0.02, 0.0],  # pending near-duplicate
        ids[2]: [0.998, 0.0, 0.03],  # skipped near-duplicate
        ids[3]: [0.999, 0.01, 0.01],  # approved: kept
        ids[4]: [0.0, 1.0, 0.0],  # far
    }
    for cid, vec in vectors.items():
        states.store_embedding(db, cid, vec, model_name="test/model", generation_strategy="mid")
    states.skip_clip(db, ids[2], "alice")
    states.approve_clip(db, ids[3], "alice")
    c = client(db, local_store)
    p = page(c, f"/?clip={ids[0]}")
    assert "Archive 2 near-duplicates</button>" in p["html"]
    form = re.search(r'id="archive-duplicates">(.*?)</form>', p["html"], re.S).group(1)  # type: ignore[union-attr]
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form))
    r = c.post("/api/batch/archive", headers=ORIGIN, data=fields, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/?clip={ids[0]}"
    assert [states.get_clip(db, i).state for i in ids] == [
        "pending_review",
        "archived",
        "archived",
        "approved",
        "pending_review",
    ]
    assert events(db)[-2:] == [("archive", [ids[1]]), ("archive", [ids[2]])]
    assert "near-duplicate" not in page(c, f"/?clip={ids[0]}")["html"].split("Similar clips")[1]


def test_missing_clip_and_empty_queue(db: Database, local_store: LocalObjectStore) -> None:
    c = client(db, local_store)
    html = page(c)["html"]
    assert "Nothing to review" in html
    missing = c.get("/?clip=42")
    assert missing.status_code == 404 and "Clip 42 does not exist" in missing.text
    p = page(c)
    assert undo(c, p).json()["message"] == "Nothing to undo."
    with db.session() as s:
        assert s.scalar(select(Clip.id)) is None


def test_hostile_ids_and_frames_are_4xx_not_500(
    db: Database, local_store: LocalObjectStore
) -> None:
    """What an attacker found: `?clip=²` (`str.isdigit` is true, `int` refuses it), an id past
    Postgres bigint, and `frame=²`; each was a 500. Now a 4xx with a reason, nothing changed."""
    ids = make_clips(db, local_store)
    c = TestClient(create_app(db, local_store), base_url=BASE, raise_server_exceptions=False)
    p = page(c)
    for query in ("%C2%B2", "abc", "-1", "0", "1.5", "%20" + str(ids[0]), "9" * 30):
        r = c.get(f"/?clip={query}")
        assert r.status_code == 400 and "must be a clip id" in r.text, query
    assert c.get(f"/?clip={2**63 - 1}").status_code == 404
    headers = {**ORIGIN, "X-CSRF-Token": p["csrf"], "Accept": "application/json"}
    huge = c.post(
        "/api/clips/99999999999999999999999/approve", json={"version": "x"}, headers=headers
    )
    assert huge.status_code == 404 and huge.json()["kind"] == "not_found"
    assert c.get("/media/clip/99999999999999999999999").status_code == 404
    assert c.get("/media/artifact/99999999999999999999999").status_code == 404
    for frame in ("\u00b2", "1e3", "--5", " 7", "9" * 30):
        r = act(c, p, "split", frame=frame)
        assert r.status_code == 422 and r.json()["message"].startswith("Refused: frame"), frame
    surrogate = '{"version": "' + p["version"] + '", "frame": "\\ud800"}'  # a lone surrogate
    as_json = {**headers, "Content-Type": "application/json"}
    r = c.post(f"/api/clips/{p['clip']}/split", content=surrogate, headers=as_json)
    assert r.status_code == 422 and r.json()["message"].startswith("Refused: frame")
    form = c.post(
        f"/api/clips/{p['clip']}/split",
        headers=ORIGIN,
        follow_redirects=False,
        data={"csrf_token": p["csrf"], "version": p["version"], "frame": "\u00b2"},
    )
    assert form.status_code == 303 and form.headers["location"] == f"/?clip={p['clip']}"
    assert "Refused: frame" in c.get(form.headers["location"]).text
    assert states.get_clip(db, ids[0]).state == "pending_review" and events(db) == []


def test_security_headers_on_every_response(db: Database, local_store: LocalObjectStore) -> None:
    """CSP, framing, sniffing and referrer headers on pages, media, refusals and 404s alike."""
    ids = make_clips(db, local_store)
    c = client(db, local_store)
    p = page(c)
    answers = [
        c.get("/"),
        c.get(f"/media/clip/{ids[0]}"),
        c.get("/static/review.js"),
        c.get("/no/such/page"),
        c.post("/api/undo", json={}),  # no Origin: 403 from the security layer
        TestClient(create_app(db, local_store), base_url="http://evil.example").get("/"),  # 421
        act(c, p, "approve"),
    ]
    for r in answers:
        assert r.headers["x-frame-options"] == "DENY", r.url
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "media-src 'self'" in csp and "default-src 'none'" in csp
    assert [r.status_code for r in answers] == [200, 200, 200, 404, 403, 421, 200]
