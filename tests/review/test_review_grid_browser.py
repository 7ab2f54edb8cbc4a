"""Issue 14's pages in a real Chromium (Debian's, under the app's Content-Security-Policy):
50 clips reviewed through the grid with fewer key presses than clips, the side-by-side merge
with an embedded neighbour, reopening a skipped clip from /queue; and the small things (keys
overlay, reasons for disabled actions, notices that neither jump the layout nor survive a
reload).

Clips are rows made through the state machine (test_review_app.make_clips) whose objects are
real: a 2 s H.264 clip, a keyframe and a 5x2 sprite sheet made once with ffmpeg from lavfi's
test pattern, so players play and sprites animate. Screenshots of the queue, the grid and the
merge go to the test's tmp dir, and are copied to $HEATERS_TEST_ARTIFACTS when it is set and
to tests/review/artifacts/ when that folder exists (nothing is committed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from heaters_media.tools import ffmpeg_bin
from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import ClipArtifact, ReviewEvent
from heaters_resources.review import create_app
from heaters_resources.states.review import not_undone
from heaters_resources.store.objects import LocalObjectStore
from tests.review.browser_wait import csp_violations, wait_for_js
from tests.review.test_review_app import make_clips
from tests.review.test_review_browser import ARTIFACTS, CHROMIUM, browser, serve  # noqa: F401

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
REPO_ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real clip, keyframe and sprite sheet (5 x 2 tiles of 48 x 27, 5 tiles a second)."""
    out = tmp_path_factory.mktemp("grid_media")
    src = ["-f", "lavfi", "-i", "testsrc=size=192x108:rate=25", "-t", "2"]
    run = [ffmpeg_bin(), "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(
        [*run, *src, "-pix_fmt", "yuv420p", "-c:v", "libx264", out / "c.mp4"], check=True
    )
    subprocess.run([*run, *src, "-frames:v", "1", out / "k.jpg"], check=True)
    tile = "fps=5,scale=48:27,tile=5x2"
    subprocess.run([*run, *src, "-vf", tile, "-frames:v", "1", out / "s.jpg"], check=True)
    return {
        name: (out / f"{name[0]}.{ext}").read_bytes()
        for name, ext in (("clip", "mp4"), ("keyframe", "jpg"), ("sprite", "jpg"))
    }


def real_clips(db: Database, store: LocalObjectStore, media: dict[str, bytes], n: int) -> list[int]:
    ids = make_clips(db, store, spans=[(i * 50, (i + 1) * 50) for i in range(n)], title="pattern")
    with db.session() as s:
        arts = s.execute(select(ClipArtifact.kind, ClipArtifact.storage_key)).all()
    for kind, key in arts:
        store.upload_bytes(media["sprite" if kind == "sprite_sheet" else "keyframe"], key)
    for cid in ids:
        store.upload_bytes(media["clip"], states.get_clip(db, cid).storage_key or "")
    return ids


def keep(page: Any, tmp_path: Path, name: str) -> Path:
    """A screenshot in the test's tmp dir, copied where artifacts are collected."""
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    targets = (
        [Path(os.environ["HEATERS_TEST_ARTIFACTS"])]
        if os.environ.get("HEATERS_TEST_ARTIFACTS")
        else []
    )
    targets += [REPO_ARTIFACTS] if REPO_ARTIFACTS.is_dir() else []
    targets += [ARTIFACTS]  # test-artifacts/, with the other pages' screenshots
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / name)
    return shot


class Keys:
    """The keyboard, counting every key press."""

    def __init__(self, page: Any) -> None:
        self.page, self.count = page, 0

    def press(self, key: str) -> None:
        self.count += 1
        self.page.keyboard.press(key)


def done_tiles(page: Any, n: int) -> None:
    wait_for_js(page, "n => document.querySelectorAll('.tile.done').length === n", n)


def test_fifty_clips_through_the_grid_with_at_most_one_key_each(
    browser: Any,  # noqa: F811
    db: Database,
    local_store: LocalObjectStore,
    media: dict[str, bytes],
    tmp_path: Path,
) -> None:
    ids = real_clips(db, local_store, media, 50)
    with serve(create_app(db, local_store)) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        blocked = csp_violations(page)
        page.goto(base + "/grid")
        assert page.locator(".tile").count() == 50
        # The sprites animate: tiles step through the sheet (CSS background-position).
        wait_for_js(
            page,
            "[...document.querySelectorAll('.thumb.sprite')].some(e => e.dataset.tile !== '0')",
        )
        keys = Keys(page)
        for n in (1, 2, 3):  # A approves the focused clip and moves on
            keys.press("a")
            done_tiles(page, n)
        keys.press("Shift+ArrowRight")
        keys.press("Shift+ArrowRight")
        assert page.text_content("#grid-selected") == "3 selected"
        keys.press("a")
        done_tiles(page, 6)
        page.click(".tile[data-index='8']")  # the mouse: a click, a Shift+click for a range
        page.click(".tile[data-index='11']", modifiers=["Shift"])
        assert page.text_content("#grid-selected") == "4 selected"
        keep(page, tmp_path, "grid-1280x900.png")
        keys.press("a")
        done_tiles(page, 10)
        assert "Approved 4 clips." in page.text_content("#notice")
        keys.press("*")  # everything left, in one action: the page is done and reloads
        with page.expect_navigation():
            keys.press("a")
        assert page.locator("#empty").count() == 1 and "Approved 40 clips." in page.text_content(
            "#notice"
        )
        with page.expect_navigation():  # one undo takes back the whole batch of 40
            keys.press("u")
        assert page.locator(".tile").count() == 40 and "40 clips are back" in page.text_content(
            "#notice"
        )
        keys.press("*")
        with page.expect_navigation():
            keys.press("a")
        assert blocked == [], "the grid broke its own Content-Security-Policy"
        context.close()
    assert keys.count <= 50, keys.count  # issue 14: <= 1 key press per approved clip
    assert [states.get_clip(db, c).state for c in ids] == ["approved"] * 50
    with db.session() as s:
        live = s.execute(
            select(func.unnest(ReviewEvent.clip_ids), func.count())
            .where(ReviewEvent.action == "approve", not_undone())
            .group_by(func.unnest(ReviewEvent.clip_ids))
        ).all()
        undone = s.scalar(select(func.count()).where(ReviewEvent.action == "undo"))
    assert dict(live) == {c: 1 for c in ids} and undone == 40  # one event per clip


def test_merge_side_by_side_and_the_small_things(
    browser: Any,  # noqa: F811
    db: Database,
    local_store: LocalObjectStore,
    media: dict[str, bytes],
    tmp_path: Path,
) -> None:
    ids = real_clips(db, local_store, media, 3)
    states.approve_clip(db, ids[0], "reviewer")
    states.start_embedding(db, ids[0])  # the neighbour was embedded right after approval
    states.complete_embedding(db, ids[0], [1.0, 0.0], model_name="t/m", generation_strategy="m")
    with serve(create_app(db, local_store)) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        blocked = csp_violations(page)
        page.goto(f"{base}/?clip={ids[0]}")
        # A disabled action says why in text; pressing its key says it in the notice, which
        # appears where room was kept for it: nothing moves.
        assert "not pending review" in page.text_content("#why-approve")
        top = page.evaluate("document.getElementById('review').getBoundingClientRect().top")
        page.keyboard.press("m")
        wait_for_js(
            page,
            "document.getElementById('notice').textContent.includes('Merge: the clip is embedded')",
        )
        assert page.evaluate("document.getElementById('review').getBoundingClientRect().top") == top
        page.keyboard.press("?")  # the keys overlay
        assert page.is_visible("#keys-help") and "Shift+click" in page.text_content("#keys-help")
        page.keyboard.press("Escape")
        assert not page.is_visible("#keys-help")

        page.goto(f"{base}/?clip={ids[1]}")
        with page.expect_navigation():
            page.keyboard.press("m")
        assert page.url.endswith(f"/merge?clip={ids[1]}")
        assert page.text_content("#merge-previous .merge-ident") == "1_0_50"
        assert page.text_content("#merge-current .merge-ident") == "1_50_100"
        assert "embedded" in page.text_content(
            "#merge-previous"
        ) and "is embedded" in page.text_content(".merge-result")
        wait_for_js(
            page,
            "[...document.querySelectorAll('.merge-side video')].every(v => v.readyState >= 2)",
        )
        keep(page, tmp_path, "merge-1280x800.png")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "Merge requested" in page.text_content("#notice")
        assert [states.get_clip(db, c).state for c in ids[:2]] == ["merging", "merging"]
        page.reload()  # the notice was one-shot: a reload does not show it again
        assert page.text_content("#notice") == "" and page.locator("#notice.quiet").count() == 1
        assert blocked == [], "the merge page broke its own Content-Security-Policy"
        context.close()
    with db.session() as s:
        merge = s.execute(
            select(ReviewEvent.clip_ids, ReviewEvent.previous_states).where(
                ReviewEvent.action == "request_merge"
            )
        ).one()
    assert (list(merge.clip_ids), list(merge.previous_states)) == (
        ids[:2],
        ["embedded", "pending_review"],
    )


def test_reopen_a_skipped_clip_from_the_queue(
    browser: Any,  # noqa: F811
    db: Database,
    local_store: LocalObjectStore,
    media: dict[str, bytes],
    tmp_path: Path,
) -> None:
    ids = real_clips(db, local_store, media, 6)
    states.approve_clip(db, ids[0], "reviewer")
    states.skip_clip(db, ids[1], "reviewer")
    states.archive_clip(db, ids[2], "reviewer")
    with serve(create_app(db, local_store)) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        blocked = csp_violations(page)
        page.goto(base + "/queue")
        assert "reviewed 3 of 6" in page.text_content("#video-progress")
        assert page.locator("#clip-table tbody tr").count() == 6
        keep(page, tmp_path, "queue-1280x800.png")
        page.select_option("select[name=state]", "skipped")
        with page.expect_navigation():
            page.click("#btn-filter")
        assert "/queue?state=skipped&" in page.url
        with page.expect_navigation():
            page.click(f"#btn-reopen-{ids[1]}")
        assert page.url.endswith("/queue?state=skipped")  # back where the reviewer was
        assert "Reopened" in page.text_content("#notice") and page.locator("#no-clips").count() == 1
        assert states.get_clip(db, ids[1]).state == "pending_review"
        page.reload()
        assert page.text_content("#notice") == ""
        with page.expect_navigation():  # undo from the queue: skipped again, still here
            page.keyboard.press("u")
        assert page.url.endswith("/queue?state=skipped") and "skipped again" in page.text_content(
            "#notice"
        )
        assert page.locator(f"#btn-reopen-{ids[1]}").count() == 1
        assert states.get_clip(db, ids[1]).state == "skipped"
        assert blocked == [], "the queue broke its own Content-Security-Policy"
        context.close()


def test_library_grid_more_like_this_and_export(
    browser: Any,  # noqa: F811
    db: Database,
    local_store: LocalObjectStore,
    media: dict[str, bytes],
    tmp_path: Path,
) -> None:
    """The library (issue 14, item 5): approved clips as animated tiles, "more like this" from a
    tile (nearest first), a selection downloaded as the export manifest."""
    import json

    ids = real_clips(db, local_store, media, 8)
    for cid in ids[:6]:
        states.approve_clip(db, cid, "reviewer")
    for n, cid in enumerate(ids):  # a line of vectors: clip n is nearest to n - 1 and n + 1
        states.store_embedding(
            db, cid, [1.0, n / 4.0, 0.0], model_name="t/m", generation_strategy="m"
        )
    with serve(create_app(db, local_store)) as base:
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        blocked = csp_violations(page)
        page.goto(base + "/library")
        assert page.locator(".tile").count() == 6  # the pending clips are not in the library
        wait_for_js(
            page,
            "[...document.querySelectorAll('.thumb.sprite')].some(e => e.dataset.tile !== '0')",
        )
        keep(page, tmp_path, "library-1280x900.png")
        with page.expect_navigation():
            page.click(f"#like-{ids[2]}")
        shown = [
            int(x)
            for x in page.eval_on_selector_all(".tile", "els => els.map(e => e.dataset.clip)")
        ]
        assert shown[:2] in ([ids[1], ids[3]], [ids[3], ids[1]]) and ids[2] not in shown
        assert set(shown) == set(ids[:6]) - {ids[2]}
        page.check(f".tile[data-clip='{shown[0]}'] input[type=checkbox]")
        page.check(f".tile[data-clip='{shown[1]}'] input[type=checkbox]")
        with page.expect_download() as download:
            page.click("#btn-export")
        rows = [json.loads(x) for x in Path(download.value.path()).read_text().splitlines()]
        assert sorted(r["clip_id"] for r in rows) == sorted(shown[:2])
        assert blocked == [], "the library broke its own Content-Security-Policy"
        context.close()
