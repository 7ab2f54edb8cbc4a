"""The embedding space: which model and strategy a vector belongs to, their defaults, and what the
database already says about a model's dimension.

Kept free of heavy imports (no torch, no OpenCV, no media code) because the review page, the CLI
and the similarity queries all need these names; importing them must stay cheap.
"""

from __future__ import annotations

import re

from sqlalchemy import select, text

from heaters_media.errors import InvalidInputError
from heaters_resources.db.engine import Database
from heaters_resources.db.models import ClipEmbedding
from heaters_resources.search.index import INDEX_TYPE
from heaters_resources.settings import Settings

#: The weights-free descriptor model (``heaters_media.descriptor.NAME``; a test keeps them equal,
#: importing it here would load OpenCV into every query).
DESCRIPTOR_MODEL = "heaters/pixels-v1"
MODEL_ENV = "HEATERS_EMBEDDING_MODEL"
STRATEGY_ENV = "HEATERS_EMBEDDING_STRATEGY"
DEFAULT_MODEL = DESCRIPTOR_MODEL
DEFAULT_STRATEGY = "keyframe_multi_avg"
#: Strategies the platform stores: one vector per clip (unique per clip, model, strategy).
STORED_STRATEGIES = ("keyframe_midpoint", "keyframe_multi_avg")


class EmbeddingDimensionError(InvalidInputError):
    """The model's vectors do not fit what is stored/indexed for that model name."""

    kind = "dimension_mismatch"


def default_model() -> str:
    return Settings.from_env().embedding_model or DEFAULT_MODEL


def default_strategy() -> str:
    return Settings.from_env().embedding_strategy or DEFAULT_STRATEGY


def check_strategy(strategy: str) -> str:
    if strategy not in STORED_STRATEGIES:
        from heaters_media.embed import STRATEGIES  # only on this error path: it loads OpenCV

        extra = (
            (
                " (it yields one vector per keyframe; clip_embeddings keeps one per clip, model "
                "and strategy)"
            )
            if strategy in STRATEGIES
            else ""
        )
        raise InvalidInputError(
            f"strategy {strategy!r} cannot be stored{extra}; use one of "
            f"{', '.join(STORED_STRATEGIES)}"
        )
    return strategy


def stored_spaces(db: Database) -> list[tuple[str, str]]:
    """Every (model, strategy) that has stored vectors, sorted (one scan: error paths only)."""
    stmt = select(ClipEmbedding.model_name, ClipEmbedding.generation_strategy).distinct()
    with db.session() as session:
        return sorted((str(m), str(s)) for m, s in session.execute(stmt))


def require_stored_space(db: Database, model_name: str, strategy: str) -> None:
    """InvalidInputError unless some clip has a ``model_name`` / ``strategy`` vector.

    Why: a query over a space nobody stored (a typo in ``--model``) answers "nothing found",
    which reads as "no duplicates" instead of "wrong model"; the error lists what exists."""
    one = select(ClipEmbedding.clip_id).where(
        ClipEmbedding.model_name == model_name, ClipEmbedding.generation_strategy == strategy
    )
    with db.session() as session:
        if session.scalar(one.limit(1)) is not None:
            return
    spaces = stored_spaces(db)
    if (model_name, strategy) not in spaces:
        known = ", ".join(f"{m} / {s}" for m, s in spaces) or "none yet (heaters embed-missing)"
        raise InvalidInputError(
            f"no clip has a {model_name!r} / {strategy!r} embedding; stored spaces: {known}",
            model=model_name,
            strategy=strategy,
        )


# --------------------------------------------------------------------------- dimensions


_INDEX_MODEL = re.compile(r"model_name\)::text = '((?:[^']|'')*)'::text")


def indexed_models(db: Database) -> list[str]:
    """The models that have stored vectors, read through their HNSW indexes (every store makes
    one; the first migration also makes empty ones for the well-known models): one catalog
    query and one index probe per model, so it costs the same for ten clips or ten million."""
    with db.session() as session:
        indexes = [
            (m.group(1).replace("''", "'"), d.group(1), int(d.group(2)))
            for (indexdef,) in session.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'clip_embeddings' "
                    "AND indexdef LIKE '%hnsw%'"
                )
            )
            if (m := _INDEX_MODEL.search(indexdef)) and (d := INDEX_TYPE.search(indexdef))
        ]
        found = set()
        for model, kind, dim in indexes:  # the index's own expression, so the index answers
            probe = "[" + ",".join(["1"] + ["0"] * (dim - 1)) + "]"
            hit = session.execute(
                text(
                    "SELECT 1 FROM clip_embeddings WHERE model_name = :m "
                    f"ORDER BY embedding::{kind}({dim}) <=> CAST(:v AS {kind}({dim})) LIMIT 1"
                ),
                {"m": model, "v": probe},
            ).first()
            if hit:
                found.add(model)
    return sorted(found)


def known_dimensions(db: Database, model_name: str) -> dict[str, int]:
    """What the database already says about ``model_name``'s dimension: its HNSW index and the
    vectors stored under that name (``{"index": 512, "stored": 512}``, either may be absent)."""
    found: dict[str, int] = {}
    with db.session() as session:
        for (indexdef,) in session.execute(
            text(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'clip_embeddings' "
                "AND indexdef LIKE '%hnsw%' AND indexdef LIKE :pred"
            ),
            {"pred": f"%model_name)::text = '{model_name}'::text%"},
        ):
            match = INDEX_TYPE.search(indexdef)
            if match:
                found["index"] = int(match.group(2))
        stored = session.scalar(
            select(ClipEmbedding.dimension).where(ClipEmbedding.model_name == model_name).limit(1)
        )
        if stored is not None:
            found["stored"] = int(stored)
    return found


def check_dimension(db: Database, model_name: str, dimension: int) -> None:
    """Raise EmbeddingDimensionError when ``dimension`` contradicts the index or stored rows."""
    for where, dim in known_dimensions(db, model_name).items():
        if dim != dimension:
            what = "its HNSW index is built for" if where == "index" else "stored vectors have"
            raise EmbeddingDimensionError(
                f"model {model_name!r} produces {dimension}-d vectors but {what} {dim}-d "
                "vectors; use another model name (or delete that model's rows and index)",
                model=model_name,
                dimension=dimension,
                expected=dim,
            )


def clip_spaces(db: Database, clip_id: int) -> list[tuple[str, str]]:
    """The (model, strategy) spaces ``clip_id`` has vectors in, newest first."""
    with db.session() as session:
        rows = session.execute(
            select(ClipEmbedding.model_name, ClipEmbedding.generation_strategy)
            .where(ClipEmbedding.clip_id == clip_id)
            .order_by(ClipEmbedding.created_at.desc())
        ).all()
    return [(str(m), str(s)) for m, s in rows]


def pick_space(spaces: list[tuple[str, str]], model: str = "") -> tuple[str, str] | None:
    """The space to search from a clip's ``spaces``: ``model``'s when given, else the
    configured default model's when the clip has it, else its newest (None: no such space)."""
    wanted = model or default_model()
    found = next((sp for sp in spaces if sp[0] == wanted), None)
    if found or model:
        return found
    return spaces[0] if spaces else None
