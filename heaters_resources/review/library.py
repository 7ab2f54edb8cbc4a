"""Read side of the library page (`/library`, JSON twin `/api/library`): the approved clips as
a grid, text search through CLIP, "more like this" from any clip in any space it has vectors
in, filters by video and state, and the selection's manifest (`/api/library/export`, the rows
`heaters export` writes).

Why the model choice is limited to what the database names: a web request must never make
the server load an arbitrary folder as a model. Text search only tries models that have an
HNSW index (every stored vector has one) and are CLIP models (they have a text side), offline:
weights that are not here give a notice saying so, not a download or a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlencode

from heaters_media.errors import MediaError
from heaters_resources.db.engine import Database
from heaters_resources.errors import HeatersStateError
from heaters_resources.review import listing
from heaters_resources.search import similarity, space

log = logging.getLogger(__name__)

#: The library: clips a reviewer approved (and what approval leads to).
LIBRARY_STATES = ("approved", "embedding", "embedded", "embedding_failed")
PAGE_SIZE = 48
MAX_QUERY = 200
#: At most this many clips in one exported selection (a whole library: `heaters export`).
MAX_SELECTION = 1000
_INT = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class LibraryQuery:
    q: str = ""  # text search (CLIP)
    like: int | None = None  # more like this clip
    model: str = ""  # a stored model name ("": the default, or the clip's own)
    state: str = ""  # one of LIBRARY_STATES, "" for all of them
    video: int | None = None
    after: str = ""  # the `next` cursor of a browse page
    limit: int = PAGE_SIZE

    def query(self, **changes: Any) -> str:
        """These parameters (with ``changes``) as a query string, defaults left out."""
        chosen = replace(self, **changes)
        pairs = [
            (f.name, str(getattr(chosen, f.name)))
            for f in fields(self)
            if getattr(chosen, f.name) != f.default
        ]
        return urlencode(pairs)


def parse_query(params: Mapping[str, str]) -> LibraryQuery | str:
    """The library's parameters, or a message saying which one is wrong (a 400)."""
    q = " ".join(params.get("q", "").split())
    if len(q) > MAX_QUERY:
        return f"q must be at most {MAX_QUERY} characters"
    state = params.get("state", "")
    if state and state not in LIBRARY_STATES:
        return f"state must be one of {', '.join(LIBRARY_STATES)} (or empty for all)"
    ids: dict[str, int | None] = {}
    for name in ("like", "video"):
        text = params.get(name, "")
        if text and not _INT.fullmatch(text):
            return f"{name} must be an id (a positive whole number)"
        ids[name] = int(text) if text else None
    model = params.get("model", "")
    if len(model) > 200:
        return "model must be a stored model's name"
    limit = PAGE_SIZE
    if params.get("limit"):
        text = params["limit"]
        if not _INT.fullmatch(text) or not 1 <= int(text) <= listing.MAX_LIMIT:
            return f"limit must be 1 to {listing.MAX_LIMIT}"
        limit = int(text)
    after = params.get("after", "")
    if after and not listing._CURSOR.fullmatch(after):
        return "after must be the `next` cursor of a previous page"
    if q and ids["like"]:
        return "search by text (q) or by a clip (like), not both"
    return LibraryQuery(q, ids["like"], model, state, ids["video"], after, limit)


@dataclass
class LibraryPage:
    mode: str  # browse, text or like
    clips: list[listing.ClipRow]
    distances: dict[int, float] = field(default_factory=dict)
    next: str | None = None
    notice: str = ""  # why a search found nothing, in words
    model: str = ""  # the space searched
    strategy: str = ""
    #: The models offered: the clip's own spaces ("like"), the CLIP models here ("text").
    models: list[str] = field(default_factory=list)
    like_clip: listing.ClipRow | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "clips": [{**c.as_json(), "distance": self.distances.get(c.id)} for c in self.clips],
            "next": self.next,
            "notice": self.notice,
            "model": self.model,
            "strategy": self.strategy,
            "models": self.models,
        }


def library_page(db: Database, query: LibraryQuery) -> LibraryPage:
    """The page for ``query``: a search when it has ``q`` or ``like``, else a keyset page."""
    wanted = (query.state,) if query.state else LIBRARY_STATES
    if query.like is not None:
        return _like(db, query, wanted)
    if query.q:
        return _text(db, query, wanted)
    after = None
    if query.after:
        a, b, c = (int(x) for x in query.after.split("."))
        after = (a, b, c)
    page = listing.list_clips(
        db,
        listing.Filters(
            video=query.video, short="any", after=after, limit=query.limit, states=wanted
        ),
    )
    return LibraryPage("browse", page.clips, next=page.next)


def _rows(
    db: Database, found: list[similarity.SimilarClip], query: LibraryQuery
) -> tuple[list[listing.ClipRow], dict[int, float]]:
    """The found clips in distance order, of the chosen video when one is chosen."""
    chosen = [n for n in found if query.video is None or n.source_video_id == query.video]
    rows = listing.clip_rows(db, [int(n.clip_id) for n in chosen])
    return rows, {int(n.clip_id): float(n.distance) for n in chosen}


def _like(db: Database, query: LibraryQuery, wanted: tuple[str, ...]) -> LibraryPage:
    """More like this: the clip's neighbours in one of its own spaces."""
    assert query.like is not None
    own = listing.clip_rows(db, [query.like])
    if not own:
        return LibraryPage("like", [], notice=f"Clip {query.like} does not exist.")
    spaces = space.clip_spaces(db, query.like)
    models = sorted({m for m, _ in spaces})
    page = LibraryPage("like", [], like_clip=own[0], models=models)
    if not spaces:
        page.notice = (
            f"Clip {own[0].identifier} has no embedding yet, so nothing is like it; it gets one "
            "when it is approved (or with HEATERS_REVIEW_SIMILAR, when it is ready for review)."
        )
        return page
    chosen = space.pick_space(spaces, query.model)
    if chosen is None:
        page.notice = f"Clip {own[0].identifier} has no {query.model} vector; it has: " + (
            ", ".join(models)
        )
        return page
    model, strategy = chosen
    found = similarity.similar_clips(
        db, query.like, query.limit, model, strategy, clip_states=list(wanted)
    )
    page.clips, page.distances = _rows(db, found, query)
    page.model, page.strategy = model, strategy
    if not page.clips:
        page.notice = f"No other clip in the library has a {model} vector yet."
    return page


def text_models(db: Database) -> list[str]:
    """The stored models that can embed text (CLIP), the default model first."""
    from heaters_media.embed_models import resolve_model

    found = []
    for name in space.indexed_models(db):
        try:
            if resolve_model(name).family == "clip":
                found.append(name)
        except (MediaError, ValueError):
            continue  # a name stored by a test or an old folder: not a text model here
    default = space.default_model()
    return sorted(found, key=lambda m: (m != default, m))


def _text(db: Database, query: LibraryQuery, wanted: tuple[str, ...]) -> LibraryPage:
    """Text search with the chosen CLIP model, or the first one whose weights are here and
    that has vectors."""
    models = text_models(db)
    page = LibraryPage("text", [], models=models)
    if query.model and query.model not in models:
        page.notice = f"{query.model} is not a CLIP model with vectors here."
        return page
    if not models:
        page.notice = (
            "Text search needs clips embedded with a CLIP model (e.g. "
            "HEATERS_EMBEDDING_MODEL=openai/clip-vit-base-patch32, its weights in the Hugging "
            "Face cache). This library has none: browse, or use “more like this”."
        )
        return page
    reasons = []
    for model in [query.model] if query.model else models:
        for strategy in dict.fromkeys([space.default_strategy(), *space.STORED_STRATEGIES]):
            try:
                found = similarity.search_text(
                    db,
                    query.q,
                    query.limit,
                    model,
                    strategy,
                    offline=True,
                    clip_states=list(wanted),
                )
            except (MediaError, HeatersStateError, ValueError) as exc:
                reasons.append(f"{model}: {exc}")
                break  # the model itself failed (weights not here): the next model
            if found:
                page.clips, page.distances = _rows(db, found, query)
                page.model, page.strategy = model, strategy
                return page
    page.notice = "No clip matched. " + " ".join(reasons)[:600]
    return page
