"""The review web app: a Starlette app with server-rendered Jinja templates and one small script.

`create_app(db, store, config)` takes its database and object store explicitly (tests pass the
embedded database and a temporary store; `heaters review` builds them from the settings).
Routes:

    GET  /                         the queue: one pending clip (or ?clip=ID), actions, progress
    GET  /progress                 the progress panel alone (HTML fragment the page polls)
    GET  /queue, /api/clips        every clip, filtered, keyset pages (HTML / JSON; `pages.py`)
    GET  /grid                     many pending clips at once, for batch actions
    GET  /merge?clip=ID            the clip and the one before it side by side, to confirm
    POST /api/clips/{id}/{action}  approve | skip | archive | reopen | merge | split
    POST /api/batch/{action}       approve | skip | archive many clips (one undo)
    POST /api/reviewer             choose the reviewer name this browser acts as
    POST /api/undo                 undo this reviewer's last action (a whole batch)
    GET  /media/clip/{id}          the clip file (Range requests) / presigned redirect on S3
    GET  /media/artifact/{id}      a keyframe or sprite sheet
    GET  /healthz                  liveness

Database work runs in Starlette's thread pool so a slow query never stalls video streaming.
Notices travel in a one-shot cookie (`flash.py`), never in the URL; who acts is a named
reviewer in the database (`reviewers.py`); queue claims are rows with an expiry (`claims.py`).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from heaters_resources.db.engine import Database
from heaters_resources.review import actions, flash, pages, queries, reviewers
from heaters_resources.review.claims import Claims
from heaters_resources.review.headers import (
    SecurityHeaders,
    content_security_policy,
    store_origins,
)
from heaters_resources.review.library_views import LibraryViews
from heaters_resources.review.media import object_response
from heaters_resources.review.queries import RunLookup
from heaters_resources.review.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    ReviewSession,
    SecurityMiddleware,
    Signer,
    check_token,
    verify_csrf,
)
from heaters_resources.settings import Settings
from heaters_resources.store.objects import ObjectStore

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024
#: Ids and frame numbers are Postgres `bigint`s: a larger number cannot name a row, and handed
#: to the database it would fail as an overflow (a 500).
MAX_BIGINT = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")
#: `review_events.actor` holds 200 characters: the name plus `@web-` and 8 of the session id.
MAX_REVIEWER = 180


@dataclass(frozen=True)
class ReviewConfig:
    """How the app behaves; `token` is required by `security.check_bind` for non-local binds."""

    token: str | None = None
    reviewer: str = "reviewer"
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    claim_seconds: float = 300.0
    similar_k: int = 6
    poll_ms: int = 2000

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        if not 0 < len(self.reviewer) <= MAX_REVIEWER:
            raise ValueError(
                f"the reviewer name must be 1 to {MAX_REVIEWER} characters (it is stored with "
                "every review action)"
            )


def parse_bigint(text: str | None) -> int | None:
    """`text` as an integer that fits a `bigint`, or None: ASCII digits only (`str.isdigit`
    also accepts `²`, which `int` then refuses), an optional minus, no spaces."""
    if text is None or not _INTEGER.fullmatch(text):
        return None
    value = int(text)
    return value if -MAX_BIGINT <= value <= MAX_BIGINT else None


def timecode(seconds: float | None) -> str:
    """`H:MM:SS.ss` in the source video (frame numbers are shown beside it)."""
    if seconds is None:
        return "?"
    centis = round(seconds * 100)
    h, rest = divmod(centis, 360_000)
    m, rest = divmod(rest, 6000)
    return f"{h}:{m:02d}:{rest // 100:02d}.{rest % 100:02d}"


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["timecode"] = timecode
    return env


class ReviewApp:
    """Route handlers bound to one database, store and configuration."""

    def __init__(
        self, db: Database, store: ObjectStore, config: ReviewConfig, runs: RunLookup | None
    ) -> None:
        self.db, self.store, self.config, self.runs = db, store, config, runs
        self.claims = Claims(db, config.claim_seconds)
        self.signer = Signer(config.secret)
        self.env = _templates()

    # ------------------------------------------------------------------ helpers

    def default_reviewer(self, session: ReviewSession) -> str:
        """The name of a browser that chose none (see `reviewers`)."""
        if self.config.token is None:
            return self.config.reviewer
        return f"{self.config.reviewer}@web-{session.short}"

    async def identity(self, request: Request) -> reviewers.Identity:
        key = request.cookies.get(reviewers.COOKIE)
        name = await run_in_threadpool(reviewers.find, self.db, key)
        if name is not None:
            return reviewers.Identity(name, key)
        return reviewers.Identity(self.default_reviewer(request.state.review_session), None)

    async def remember(self, who: reviewers.Identity, ok: bool) -> list[str]:
        """The cookie that binds a browser to its default reviewer after its first action
        that went through (so it outlives the browser session); none when already bound."""
        if who.key is not None or not ok:
            return []
        key = await run_in_threadpool(reviewers.bind, self.db, who.name)
        return [reviewers.cookie(key)]

    async def render(self, request: Request, name: str, **context: Any) -> HTMLResponse:
        """A page with the context every page shows; it takes the one-shot notice (and clears
        its cookie), unless the handler gave one."""
        session: ReviewSession = request.state.review_session
        taken = flash.read(self.signer, request.cookies.get(flash.COOKIE))
        if taken and not context.get("notice"):
            context["notice"], context["notice_error"] = taken
        context.setdefault("notice", "")
        context.setdefault("notice_error", False)
        who = await self.identity(request)
        context.setdefault("reviewer", who.name)
        context.setdefault("reviewer_named", who.key is not None)
        context.setdefault("csrf", session.csrf)
        if "pending" not in context:
            context["pending"] = await run_in_threadpool(queries.pending_count, self.db)
        html = self.env.get_template(name).render(**context)
        response = HTMLResponse(html, headers={"Cache-Control": "no-store"})
        if flash.COOKIE in request.cookies:
            response.headers.append("set-cookie", flash.clear_cookie())
        return response

    # ------------------------------------------------------------------ pages

    async def queue(self, request: Request) -> StarletteResponse:
        session: ReviewSession = request.state.review_session
        requested = request.query_params.get("clip")
        notice = ""
        clip_id: int | None = None
        status = 200
        if requested:
            clip_id = parse_bigint(requested)
            if clip_id is None or clip_id < 1:
                return PlainTextResponse(
                    "?clip= must be a clip id (a positive whole number).", status_code=400
                )
        who = await self.identity(request)
        if not requested:
            pending = await run_in_threadpool(queries.pending_clip_ids, self.db)
            picked = await run_in_threadpool(self.claims.pick, pending, session.sid, who.name)
            clip_id = picked[0] if picked else None
        clip = await run_in_threadpool(queries.clip_view, self.db, clip_id) if clip_id else None
        if requested and clip is None:
            notice, status = notice or f"Clip {clip_id} does not exist.", 404
        similar = (
            await run_in_threadpool(queries.similar_clips, self.db, clip.id, self.config.similar_k)
            if clip
            else []
        )
        holder = await run_in_threadpool(self.claims.holder, clip.id) if clip else None
        context = {
            "page": "review",
            "clip": clip,
            "similar": similar,
            "duplicates": queries.near_duplicates_to_archive(similar),
            "describe_pending": Settings.from_env().review_similar,
            "notice": notice,
            "notice_error": bool(notice),
            "events": await self._events(who.name),
            "shared": holder is not None and holder != session.sid,
            "elsewhere": await run_in_threadpool(self.claims.held_by_others, session.sid),
            "poll_ms": self.config.poll_ms,
        }
        response = await self.render(request, "queue.html", **context)
        response.status_code = status
        return response

    async def progress(self, request: Request) -> StarletteResponse:
        events = await self._events((await self.identity(request)).name)
        html = self.env.get_template("_progress.html").render(events=events)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def _events(self, actor: str) -> list[queries.EventView]:
        return await run_in_threadpool(queries.recent_events, self.db, actor, 8, self.runs)

    # ------------------------------------------------------------------ actions

    async def clip_action(self, request: Request) -> StarletteResponse:
        session: ReviewSession = request.state.review_session
        form, error = await self._read_form(request, session)
        if error is not None:
            return error
        clip_id = int(request.path_params["clip_id"])
        action = request.path_params["action"]
        frame_text = form.get("frame")
        frame = parse_bigint(frame_text)
        if clip_id > MAX_BIGINT:
            outcome = actions.ActionOutcome(
                False, f"Refused: clip {clip_id} not found", "not_found"
            )
            return self.answer(request, outcome, next_url="/")
        if frame_text not in (None, "") and frame is None:
            outcome = actions.ActionOutcome(
                False, "Refused: frame must be a whole frame number.", "invalid", clip_id=clip_id
            )
            return self.answer(request, outcome, next_url=f"/?clip={clip_id}")
        previous = _previous(form)
        if previous == "bad":
            outcome = actions.ActionOutcome(
                False, "Refused: previous must name the clip shown beside it.", "invalid"
            )
            return self.answer(request, outcome, next_url=f"/?clip={clip_id}")
        who = await self.identity(request)
        outcome = await run_in_threadpool(
            lambda: actions.perform(
                self.db,
                action,
                clip_id,
                version=form.get("version", ""),
                actor=who.name,
                frame=frame,
                previous=previous if isinstance(previous, tuple) else None,
            )
        )
        if outcome.ok:
            await run_in_threadpool(self.claims.release, [clip_id], session.sid)
        cookies = await self.remember(who, outcome.ok)
        target = "/" if outcome.ok else f"/?clip={clip_id}"
        if action == "reopen":
            target = pages.return_to(form.get("return_to", "")) or target
        return self.answer(request, outcome, next_url=target, cookies=cookies, form=form)

    async def undo(self, request: Request) -> StarletteResponse:
        session: ReviewSession = request.state.review_session
        form, error = await self._read_form(request, session)
        if error is not None:
            return error
        who = await self.identity(request)
        outcome = await run_in_threadpool(actions.undo_last, self.db, who.name)
        cookies = await self.remember(who, outcome.ok)
        target = f"/?clip={outcome.clip_id}" if outcome.ok and outcome.clip_id else "/"
        target = pages.return_to(form.get("return_to", "")) or target
        return self.answer(request, outcome, next_url=target, cookies=cookies, form=form)

    async def _read_form(
        self,
        request: Request,
        session: ReviewSession,
    ) -> tuple[dict[str, str], StarletteResponse | None]:
        """The body as a flat dict (JSON or urlencoded, no multipart), CSRF-checked.

        At most MAX_BODY bytes are read: a larger declared or streamed body is refused (413)
        as soon as it is known to be larger, so an upload cannot fill this process's memory."""
        raw = await _limited_body(request, MAX_BODY)
        if raw is None:
            return {}, PlainTextResponse("request too large", status_code=413)
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                data = json.loads(raw or b"{}")
                form = {str(k): _flat(v) for k, v in data.items()} if isinstance(data, dict) else {}
            else:
                form = {}
                for k, v in parse_qsl(raw.decode("utf-8")):  # a repeated field: one per line
                    form[k] = f"{form[k]}\n{v}" if k in form else v
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...
            return {}, PlainTextResponse("malformed request body", status_code=400)
        if not verify_csrf(session, request.headers.get(CSRF_HEADER), form.get(CSRF_FIELD)):
            return form, PlainTextResponse(
                "CSRF token missing or wrong: reload the page.", status_code=403
            )
        return form, None

    def answer(
        self,
        request: Request,
        outcome: actions.ActionOutcome,
        next_url: str,
        cookies: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
    ) -> StarletteResponse:
        """JSON for the script, a 303 to `next_url` for a plain form. The notice goes to the
        next page in the flash cookie: always for a form, and for the script when it asked
        (`flash=1`: it is about to load `next`) and the action went through (it shows a
        refusal itself, on the page it stays on)."""
        response: StarletteResponse
        as_json = "application/json" in request.headers.get("accept", "")
        if as_json:
            body = {
                "ok": outcome.ok,
                "message": outcome.message,
                "kind": outcome.kind,
                "event_id": outcome.event_id,
                "clip_id": outcome.clip_id,
                "next": next_url,
                **(extra or {}),
            }
            response = JSONResponse(body, status_code=outcome.status_code)
        else:
            response = RedirectResponse(next_url, status_code=303)
        if not as_json or (outcome.ok and (form or {}).get("flash") == "1"):
            response.headers.append(
                "set-cookie", flash.set_cookie(self.signer, outcome.message, not outcome.ok)
            )
        for cookie in cookies or []:
            response.headers.append("set-cookie", cookie)
        return response

    # ------------------------------------------------------------------ media

    async def media(self, request: Request) -> StarletteResponse:
        kind = "clip" if request.url.path.startswith("/media/clip/") else "artifact"
        object_id = int(request.path_params["object_id"])
        if object_id > MAX_BIGINT:
            return PlainTextResponse("no such object", status_code=404)
        key = await run_in_threadpool(queries.object_key, self.db, kind, object_id)
        if not key:
            return PlainTextResponse("no such object", status_code=404)
        return await run_in_threadpool(object_response, self.store, key)


def _flat(value: Any) -> str:
    """A JSON field as the form's string: a list of strings one per line (as a repeated form
    field), anything else as `str` (a wrong type then fails the field's own check)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return str(value)


def _previous(form: dict[str, str]) -> tuple[int, str] | str | None:
    """The merge neighbour the page showed, `previous` (its id) and `previous_version`; None
    when not sent, "bad" when malformed."""
    text = form.get("previous")
    if text in (None, ""):
        return None
    pid = parse_bigint(text)
    if pid is None or pid < 1 or not form.get("previous_version"):
        return "bad"
    return pid, form["previous_version"]


async def _limited_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _healthz(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_app(
    db: Database,
    store: ObjectStore,
    config: ReviewConfig | None = None,
    *,
    runs: RunLookup | None = None,
) -> Starlette:
    """The ASGI app. `runs` maps a review event id to its Dagster run (see `runs.py`)."""
    config = config or ReviewConfig()
    review = ReviewApp(db, store, config, runs)
    views = pages.Pages(review)
    shelf = LibraryViews(review)
    routes = [
        Route("/", review.queue),
        Route("/progress", review.progress),
        Route("/queue", views.clip_list),
        Route("/api/clips", views.api_clips),
        Route("/grid", views.grid),
        Route("/merge", views.merge),
        Route("/library", shelf.page),
        Route("/api/library", shelf.api),
        Route("/api/library/export", shelf.export),
        Route("/api/batch/{action}", views.batch, methods=["POST"]),
        Route("/api/reviewer", views.set_reviewer, methods=["POST"]),
        Route("/api/clips/{clip_id:int}/{action}", review.clip_action, methods=["POST"]),
        Route("/api/undo", review.undo, methods=["POST"]),
        Route("/media/clip/{object_id:int}", review.media, methods=["GET", "HEAD"]),
        Route("/media/artifact/{object_id:int}", review.media, methods=["GET", "HEAD"]),
        Route("/healthz", _healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    csp = content_security_policy(store_origins(store))
    middleware = [
        Middleware(SecurityHeaders, csp=csp),
        Middleware(SecurityMiddleware, signer=Signer(config.secret), token=config.token),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.review = review
    return app
