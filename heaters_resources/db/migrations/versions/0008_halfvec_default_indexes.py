"""The initial migration's HNSW indexes (CLIP ViT-B/32, DINOv2-small) become `halfvec` indexes
when no vector is stored under their model yet (issue 15: a current embedded Postgres).

Why: an HNSW graph over `halfvec` (2-byte floats) takes half the memory and disk of one over
`vector`, builds faster, and ranks as well (`benchmarks/bench_pgvector.py --index-kind both`,
100k 512-d vectors: 130 vs 260 MiB, recall@10 1.000 either way). New models get halfvec
indexes from `ensure_hnsw_index` (HEATERS_VECTOR_INDEX); this brings the two pre-made ones in
line. An index that already has vectors is left as it is (rebuilding it here would stall the
upgrade of a large library): `heaters reindex MODEL` converts it when convenient. Queries
follow whatever kind each index is (`search.index.index_kind`).

Revision ID: 0008_halfvec_default_indexes
Revises: 0007_reviewers_claims
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_halfvec_default_indexes"
down_revision = "0007_reviewers_claims"
branch_labels = None
depends_on = None

#: The models 0001 made indexes for, and their dimensions.
MODELS = {"openai/clip-vit-base-patch32": 512, "facebook/dinov2-small": 384}


def _slug(model: str) -> str:
    return model.replace("/", "_").replace("-", "_").replace(".", "_")


def _empty(model: str, dim: int, kind: str) -> bool:
    """No vector stored under ``model``: one probe through its own index (never a scan)."""
    probe = "[" + ",".join(["1"] + ["0"] * (dim - 1)) + "]"
    row = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT 1 FROM clip_embeddings WHERE model_name = :m "
                f"ORDER BY embedding::{kind}({dim}) <=> CAST(:v AS {kind}({dim})) LIMIT 1"
            ),
            {"m": model, "v": probe},
        )
        .first()
    )
    return row is None


def _swap(old: str, new: str) -> None:
    for model, dim in MODELS.items():
        name = f"ix_clip_embeddings_hnsw_{_slug(model)}"
        found = (
            op.get_bind()
            .execute(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": name})
            .scalar()
        )
        if found is None or f"::{old}(" not in found or not _empty(model, dim, old):
            continue
        op.execute(f"DROP INDEX {name}")
        op.execute(
            f"CREATE INDEX {name} ON clip_embeddings USING hnsw "
            f"((embedding::{new}({dim})) {new}_cosine_ops) WHERE model_name = '{model}'"
        )


def upgrade() -> None:
    _swap("vector", "halfvec")


def downgrade() -> None:
    _swap("halfvec", "vector")
