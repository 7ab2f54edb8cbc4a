"""Per-clip asset ``clip_embedding`` and the job that runs it (``embed_clips_job``).

A thin wrapper over :func:`heaters_resources.embeddings.embed_clips`: many clip partitions per
run (one model load, batched inference), metadata for the UI, and the
``embedding_dimension_and_norm`` check. Runs carry the tag ``heaters/resource=embedding``, which
the queued run coordinator in ``dagster.yaml`` limits to one at a time (one GPU / all cores).
"""

import dagster as dg

from heaters_assets.assets.clips import keyframes
from heaters_assets.partitions import EMBEDDING_BACKFILL_POLICY, clips_partitions
from heaters_assets.progress import run_log_progress
from heaters_resources.orchestration import names
from heaters_resources.orchestration.resources import DatabaseResource, ObjectStoreResource
from heaters_resources.steps import embeddings
from heaters_resources.steps.checks import embedding_problems

CHECK = "embedding_dimension_and_norm"


class EmbeddingConfig(dg.Config):
    """Which vectors to make. Empty model/strategy: HEATERS_EMBEDDING_MODEL /
    HEATERS_EMBEDDING_STRATEGY (defaults heaters/pixels-v1, keyframe_multi_avg)."""

    model: str | None = None
    strategy: str | None = None
    model_path: str | None = None
    offline: bool | None = None
    overwrite: bool = False
    before_review: bool = False
    batch_size: int = 32
    device: str = "auto"


@dg.asset(
    partitions_def=clips_partitions,
    group_name=names.CLIPS_GROUP,
    deps=[keyframes],
    backfill_policy=EMBEDDING_BACKFILL_POLICY,
    op_tags=names.EMBEDDING_TAGS,
    description="Image embedding of the clip's keyframes (pgvector, HNSW cosine), one row per "
    "(clip, model, strategy). Approved clips move to embedded.",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK,
            asset="clip_embedding",
            description="Stored vectors have the model's dimension and unit norm (1 +- 1e-3).",
        )
    ],
    kinds={"pgvector"},
)
def clip_embedding(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:
    db, store = database.get_database(), object_store.get_store()
    out = embeddings.embed_clips(
        db,
        store,
        context.partition_keys,
        model=config.model,
        strategy=config.strategy,
        model_path=config.model_path,
        offline=config.offline,
        overwrite=config.overwrite,
        before_review=config.before_review,
        batch_size=config.batch_size,
        device=config.device,
        progress=run_log_progress(context, "embeddings"),
    )
    out.raise_for_failures()
    d = out.details
    problems = embedding_problems(
        db, out.done, d["model"], d["strategy"], int(d.get("dimension", 0))
    )
    return dg.MaterializeResult(
        metadata={
            "model": d["model"],
            "strategy": d["strategy"],
            "dimension": int(d.get("dimension", 0)),
            "count": int(d.get("count", 0)),
            "images": int(d.get("images", 0)),
            "images_per_second": float(d.get("images_per_second", 0.0)),
            "seconds": round(out.seconds, 2),
            "clips_skipped": len(out.skipped),
            "skipped": dg.MetadataValue.json(out.skipped),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK,
                passed=not problems,
                metadata={"problems": dg.MetadataValue.json(problems[:50])},
            )
        ],
    )


embed_clips_job = dg.define_asset_job(
    names.EMBED_CLIPS_JOB,
    selection=[clip_embedding],
    tags=names.EMBEDDING_TAGS,
    description="Embeddings for a range of clip partitions in one run (one model load).",
)
