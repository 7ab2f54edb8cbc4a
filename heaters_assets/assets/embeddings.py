"""Clip-level asset ``clip_embedding`` (partitioned by video) and its job ``embed_clips_job``.

A thin wrapper over :func:`heaters_resources.steps.embeddings.embed_clips`: the clips of one or
many video partitions per run (one model load, batched inference), one materialization per
video, and the ``embedding_dimension_and_norm`` check. Runs carry the tag
``heaters/resource=embedding``, which the queued run coordinator in ``dagster.yaml`` limits to
one at a time (one GPU / all cores).
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from heaters_assets import previews
from heaters_assets.assets.clips import KEYFRAMES
from heaters_assets.materializations import check_result, per_video, video_ids
from heaters_assets.partitions import EMBEDDING_BACKFILL_POLICY, source_videos_partitions
from heaters_assets.progress import run_log_progress
from heaters_resources import steps
from heaters_resources.orchestration import names
from heaters_resources.orchestration.resources import DatabaseResource, ObjectStoreResource
from heaters_resources.settings import Settings
from heaters_resources.states import leases
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
    #: ``auto``: HEATERS_EMBED_DEVICE (default auto: CUDA, then MPS, then the CPU).
    device: str = "auto"


@dg.asset(
    partitions_def=source_videos_partitions,
    group_name=names.CLIPS_GROUP,
    owners=names.asset_owners(),
    deps=[KEYFRAMES],
    output_required=False,
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
) -> Iterator[Any]:
    db, store = database.get_database(), object_store.get_store()
    wanted = set(embeddings.EMBEDDABLE_STATES) | {"embedding_failed"}
    if config.before_review:
        wanted.add("pending_review")
    with leases.holding(db, context.run.run_id):
        clips = steps.clips_of_videos(db, video_ids(context), wanted)
        out = embeddings.embed_clips(
            db,
            store,
            [ident for _, ident in clips],
            model=config.model,
            strategy=config.strategy,
            model_path=config.model_path,
            offline=config.offline,
            overwrite=config.overwrite,
            before_review=config.before_review,
            batch_size=config.batch_size,
            device=Settings.from_env().embed_device if config.device == "auto" else config.device,
            progress=run_log_progress(context, "embeddings"),
        )
    d = out.details
    dimension = int(d.get("dimension", 0))
    common = {
        "model": d["model"],
        "strategy": d["strategy"],
        "dimension": dimension,
        "run_images_per_second": float(d.get("images_per_second", 0.0)),
    }
    if d.get("clips_cut"):  # HEATERS_CLIPS=proxy: approved clips got their files here
        common.update(clips_cut=int(d["clips_cut"]), cut_seconds=float(d["cut_seconds"]))
    figures = previews.clip_figures(db, [ident for _, ident in clips])
    yield from per_video(
        context,
        context.asset_key,
        out,
        clips,
        common=common,
        figures=figures,
        image_kind="keyframe",
    )
    problems = embedding_problems(db, out.done, d["model"], d["strategy"], dimension)
    yield check_result(CHECK, problems, len(out.done), "have the model's dimension and unit norm")
    out.raise_for_failures()


embed_clips_job = dg.define_asset_job(
    names.EMBED_CLIPS_JOB,
    selection=[clip_embedding],
    tags=names.EMBEDDING_TAGS,
    description="Embeddings for one or a range of video partitions in one run (one model load).",
)
