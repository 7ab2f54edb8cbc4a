"""Per-clip assets: ``keyframes`` and ``sprite_sheet``.

They run over many clip partitions per run (``context.partition_keys``), so the clips of a
splice or a backfill are processed together; one failing clip is marked failed and the others
still complete, then the run fails naming it.
"""

from typing import Any

import dagster as dg

from heaters_assets.assets.videos import clip_splits
from heaters_assets.config import KeyframeConfig, SpriteConfig
from heaters_assets.partitions import CLIP_BACKFILL_POLICY, clips_partitions
from heaters_assets.progress import run_log_progress
from heaters_resources import steps
from heaters_resources.orchestration import names
from heaters_resources.orchestration.resources import DatabaseResource, ObjectStoreResource


def _batch_metadata(out: steps.ClipBatchOutcome) -> dict[str, Any]:
    return {
        "clips_done": len(out.done),
        "clips_skipped": len(out.skipped),
        "clips_failed": len(out.failed),
        "artifacts": out.artifacts,
        "seconds": round(out.seconds, 2),
        "skipped": dg.MetadataValue.json(out.skipped),
    }


# A clip partition (`<video>_<start>_<end>`) comes from the clip_splits partition of its video,
# a mapping Dagster cannot express (custom partition mappings are not supported). The default
# identity mapping would look for a clip_splits partition named like the clip, and the daemon
# refuses such a backfill ("depends on non-existent partitions"); "all partitions" keeps the
# lineage edge in the UI and lets backfills and sensors target clips freely.
_FROM_SPLITS = dg.AssetDep(clip_splits, partition_mapping=dg.AllPartitionMapping())


@dg.asset(
    partitions_def=clips_partitions,
    group_name=names.CLIPS_GROUP,
    deps=[_FROM_SPLITS],
    backfill_policy=CLIP_BACKFILL_POLICY,
    op_tags=names.MEDIA_TAGS,
    description="JPEG keyframes of the clip (midpoint or 25/50/75 %).",
    check_specs=[
        dg.AssetCheckSpec(
            "keyframes_stored",
            asset="keyframes",
            description="Each clip has its keyframes in the store.",
        )
    ],
    kinds={"image"},
)
def keyframes(
    context: dg.AssetExecutionContext,
    config: KeyframeConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:
    db, store = database.get_database(), object_store.get_store()
    out = steps.keyframe_clips(
        db,
        store,
        context.partition_keys,
        strategy=config.strategy,
        overwrite=config.overwrite,
        progress=run_log_progress(context, "keyframes"),
    )
    out.raise_for_failures()
    problems = steps.artifact_problems(db, store, out.done, "keyframe")
    return dg.MaterializeResult(
        metadata={**_batch_metadata(out), "strategy": config.strategy},
        check_results=[
            dg.AssetCheckResult(
                check_name="keyframes_stored",
                passed=not problems,
                metadata={"problems": dg.MetadataValue.json(problems)},
            )
        ],
    )


@dg.asset(
    partitions_def=clips_partitions,
    group_name=names.CLIPS_GROUP,
    deps=[keyframes],
    backfill_policy=CLIP_BACKFILL_POLICY,
    op_tags=names.MEDIA_TAGS,
    description="Sprite sheet for scrubbing + its metadata JSON, then ready for review.",
    check_specs=[
        dg.AssetCheckSpec(
            "sprite_matches_image",
            asset="sprite_sheet",
            description="Sprite metadata matches the stored image size.",
        )
    ],
    kinds={"image"},
)
def sprite_sheet(
    context: dg.AssetExecutionContext,
    config: SpriteConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:
    db, store = database.get_database(), object_store.get_store()
    out = steps.sprite_clips(
        db,
        store,
        context.partition_keys,
        tile_width=config.tile_width,
        max_fps=config.max_fps,
        cols=config.cols,
        overwrite=config.overwrite,
        progress=run_log_progress(context, "sprites"),
    )
    out.raise_for_failures()
    problems = steps.artifact_problems(db, store, out.done, "sprite_sheet")
    metadata = _batch_metadata(out)
    if out.done:
        metadata["preview"] = dg.MetadataValue.path(store.url(steps.sprite_key_of(db, out.done[0])))
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="sprite_matches_image",
                passed=not problems,
                metadata={"problems": dg.MetadataValue.json(problems)},
            )
        ],
    )
