"""The review app's pages for many clips at once: the clip list (`/queue`, JSON twin
`/api/clips`), the grid of pending clips with batch actions, the side-by-side merge
confirmation, and choosing the reviewer name.

Handlers live on `Pages`, bound to the `ReviewApp` whose helpers they share (rendering with
the flash notice, CSRF-checked body parsing, the acting reviewer, answers as JSON or a 303);
the security middleware in front of every route is the same.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.responses import Response as StarletteResponse

from heaters_resources.db.models import CLIP_STATES
from heaters_resources.review import actions, listing, queries, reviewers
from heaters_resources.review.security import ReviewSession
from heaters_resources.states.review_batch import MAX_BATCH

if TYPE_CHECKING:
    from heaters_resources.review.app import ReviewApp

_RETURN_TO = re.compile(r"/(queue|grid)?(\?[A-Za-z0-9_=&.%+-]*)?")
_ITEM = re.compile(r"([0-9]{1,18})\|([A-Za-z_]{1,32}@[0-9T:.+ -]{1,40})")
GRID_SIZE = 50


def return_to(text: str) -> str | None:
    """`text` if it is one of this app's list pages (where a form asks to go back to), else
    None: never another site (`//host`), never a path with anything odd in it."""
    return text if _RETURN_TO.fullmatch(text) else None


def parse_items(text: str) -> list[tuple[int, str]] | None:
    """The `clips` field of a batch: one `id|version` per line; None when malformed."""
    lines = [line for line in text.split("\n") if line]
    if not 0 < len(lines) <= MAX_BATCH:
        return None
    items = []
    for line in lines:
        found = _ITEM.fullmatch(line)
        if not found:
            return None
        items.append((int(found.group(1)), found.group(2)))
    return items


class Pages:
    def __init__(self, review: ReviewApp) -> None:
        self.review = review
        self.db = review.db

    async def _listing(
        self, request: Request, **defaults: Any
    ) -> tuple[listing.Filters, listing.Page] | StarletteResponse:
        filters = listing.parse_filters(request.query_params, **defaults)
        if isinstance(filters, str):
            return PlainTextResponse(filters, status_code=400)
        page = await run_in_threadpool(listing.list_clips, self.db, filters)
        return filters, page

    async def clip_list(self, request: Request) -> StarletteResponse:
        """GET /queue: every clip, filtered, one keyset page, with per-video progress."""
        found = await self._listing(request)
        if isinstance(found, StarletteResponse):
            return found
        filters, page = found
        shown = sorted(
            {c.video_id for c in page.clips} | ({filters.video} if filters.video else set())
        )
        context = {
            "page": "queue",
            "filters": filters,
            "rows": page.clips,
            "next": page.next,
            "progress": await run_in_threadpool(listing.progress, self.db, shown),
            "library": (await run_in_threadpool(listing.progress, self.db, None))[0],
            "videos": await run_in_threadpool(listing.videos, self.db),
            "names": await run_in_threadpool(reviewers.names, self.db),
            "clip_states": CLIP_STATES,
            "here": "/queue" + (f"?{filters.query()}" if filters.query() else ""),
        }
        return await self.review.render(request, "clips.html", **context)

    async def api_clips(self, request: Request) -> StarletteResponse:
        """GET /api/clips: the same as /queue, as JSON (`next` is the cursor for `after`)."""
        found = await self._listing(request)
        if isinstance(found, StarletteResponse):
            return found
        _filters, page = found
        shown = sorted({c.video_id for c in page.clips})
        progress = await run_in_threadpool(listing.progress, self.db, shown)
        return JSONResponse(
            {
                "clips": [c.as_json() for c in page.clips],
                "next": page.next,
                "videos": [p.as_json() for p in progress],
            },
            headers={"Cache-Control": "no-store"},
        )

    async def grid(self, request: Request) -> StarletteResponse:
        """GET /grid: up to GRID_SIZE pending clips as animated sprites, claimed for this
        session (another reviewer's grid shows other clips)."""
        found = await self._listing(request, state="pending_review", limit=GRID_SIZE * 3)
        if isinstance(found, StarletteResponse):
            return found
        filters, page = found
        if filters.state != "pending_review":
            return PlainTextResponse("the grid shows pending clips only", status_code=400)
        session: ReviewSession = request.state.review_session
        who = await self.review.identity(request)
        ids = [c.id for c in page.clips]
        picked = await run_in_threadpool(
            self.review.claims.pick, ids, session.sid, who.name, GRID_SIZE
        )
        chosen = set(picked)
        context = {
            "page": "grid",
            "rows": [c for c in page.clips if c.id in chosen],
            "filters": filters,
            "here": "/grid" + (f"?{q}" if (q := filters.query(state="", limit=50)) else ""),
            "events": await run_in_threadpool(queries.recent_events, self.db, who.name, 4),
            "elsewhere": await run_in_threadpool(self.review.claims.held_by_others, session.sid),
        }
        return await self.review.render(request, "grid.html", **context)

    async def merge(self, request: Request) -> StarletteResponse:
        """GET /merge?clip=ID: the clip and the one before it side by side, to confirm."""
        text = request.query_params.get("clip", "")
        clip_id = int(text) if text.isascii() and text.isdigit() and len(text) < 19 else 0
        if clip_id < 1:
            return PlainTextResponse("?clip= must be a clip id.", status_code=400)
        clip = await run_in_threadpool(queries.clip_view, self.db, clip_id)
        if clip is None:
            return PlainTextResponse(f"Clip {clip_id} does not exist.", status_code=404)
        previous = (
            await run_in_threadpool(queries.clip_view, self.db, clip.previous_id)
            if clip.previous_id
            else None
        )
        return await self.review.render(
            request, "merge.html", page="merge", clip=clip, previous=previous
        )

    async def batch(self, request: Request) -> StarletteResponse:
        """POST /api/batch/{action}: one action on the clips of the `clips` field."""
        session: ReviewSession = request.state.review_session
        form, error = await self.review._read_form(request, session)
        if error is not None:
            return error
        target = return_to(form.get("return_to", "")) or "/grid"
        items = parse_items(form.get("clips", ""))
        if items is None:
            outcome = actions.BatchOutcome(
                False,
                f"Refused: clips must be 1 to {MAX_BATCH} lines of id|version; select clips.",
                "invalid",
            )
            return self.review.answer(request, outcome, next_url=target, form=form)
        who = await self.review.identity(request)
        action = request.path_params["action"]
        batch = await run_in_threadpool(
            lambda: actions.perform_batch(self.db, action, items, actor=who.name)
        )
        cookies = await self.review.remember(who, batch.ok)
        if batch.done:
            await run_in_threadpool(self.review.claims.release, batch.done, session.sid)
        extra = {"done": batch.done, "refused": {str(k): v for k, v in batch.refused.items()}}
        return self.review.answer(
            request, batch, next_url=target, cookies=cookies, extra=extra, form=form
        )

    async def set_reviewer(self, request: Request) -> StarletteResponse:
        """POST /api/reviewer: act as `name` from now on in this browser (made if new)."""
        session: ReviewSession = request.state.review_session
        form, error = await self.review._read_form(request, session)
        if error is not None:
            return error
        target = return_to(form.get("return_to", "")) or "/"
        name = reviewers.clean_name(form.get("name", ""))
        if name is None:
            outcome = actions.ActionOutcome(
                False,
                "Refused: a reviewer name is 1 to 80 letters, digits, spaces or . @ ' -",
                "invalid",
            )
            return self.review.answer(request, outcome, next_url=target, form=form)
        key = await run_in_threadpool(reviewers.bind, self.db, name)
        outcome = actions.ActionOutcome(True, f"You review as {name} in this browser.")
        return self.review.answer(
            request, outcome, next_url=target, cookies=[reviewers.cookie(key)], form=form
        )
