"""Handlers of the library page: `/library` (HTML), `/api/library` (its JSON twin) and
`/api/library/export` (the selected clips' manifest as JSON lines, the rows `heaters export`
writes). Read-only, so plain GETs; the security middleware in front of them is the same as for
every page (token for non-loopback clients, security headers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.responses import Response as StarletteResponse

from heaters_resources.export import manifest_rows
from heaters_resources.review import library, listing

if TYPE_CHECKING:
    from heaters_resources.review.app import ReviewApp


class LibraryViews:
    def __init__(self, review: ReviewApp) -> None:
        self.review = review
        self.db = review.db

    async def _page(
        self, request: Request
    ) -> tuple[library.LibraryQuery, library.LibraryPage] | StarletteResponse:
        query = library.parse_query(request.query_params)
        if isinstance(query, str):
            return PlainTextResponse(query, status_code=400)
        return query, await run_in_threadpool(library.library_page, self.db, query)

    async def page(self, request: Request) -> StarletteResponse:
        """GET /library: the approved clips as a grid; search by text or by a clip."""
        found = await self._page(request)
        if isinstance(found, StarletteResponse):
            return found
        query, page = found
        here = "/library" + (f"?{q}" if (q := query.query()) else "")
        return await self.review.render(
            request,
            "library.html",
            page="library",
            query=query,
            result=page,
            states=library.LIBRARY_STATES,
            videos=await run_in_threadpool(listing.videos, self.db),
            text_models=(  # a text search has just listed them
                page.models
                if page.mode == "text"
                else await run_in_threadpool(library.text_models, self.db)
            ),
            here=here,
        )

    async def api(self, request: Request) -> StarletteResponse:
        """GET /api/library: the same page as JSON (`next` is the cursor for `after`)."""
        found = await self._page(request)
        if isinstance(found, StarletteResponse):
            return found
        return JSONResponse(found[1].as_json(), headers={"Cache-Control": "no-store"})

    async def export(self, request: Request) -> StarletteResponse:
        """GET /api/library/export?clip=ID&clip=ID: the selection's manifest (JSON lines)."""
        texts = request.query_params.getlist("clip")
        if not 0 < len(texts) <= library.MAX_SELECTION or not all(
            t.isascii() and t.isdigit() and len(t) < 19 for t in texts
        ):
            return PlainTextResponse(
                f"select 1 to {library.MAX_SELECTION} clips (clip=ID, repeated)", status_code=400
            )
        ids = sorted({int(t) for t in texts})

        def lines() -> Iterator[str]:
            for row in manifest_rows(self.db, clip_ids=ids, states=library.LIBRARY_STATES):
                yield json.dumps(row, separators=(",", ":")) + "\n"

        return StreamingResponse(
            iterate_in_threadpool(lines()),
            media_type="application/x-ndjson",
            headers={
                "Content-Disposition": 'attachment; filename="heaters-selection.jsonl"',
                "Cache-Control": "no-store",
            },
        )
