"""Clip-level assets ``keyframes`` and ``sprite_sheet``, partitioned by video, made by one op.

A run covers one video partition or a range of them (``context.partition_keys``) and processes
the clips of those videos that each step can start from (or all of them with ``overwrite``), so
a backfill over the library is one run per ``VIDEOS_PER_MEDIA_RUN`` videos. One op makes both
assets from one decode of each video's source (``heaters_resources.steps.artifacts``; a subset,
e.g. only ``keyframes``, makes only that artifact, still in one pass). One failing clip is
marked failed and the others still complete; each video whose clips all succeeded gets its own
materialization (``heaters_assets.materializations``), then the run fails naming the failures.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from heaters_assets import previews
from heaters_assets.assets.videos import clip_splits
from heaters_assets.config import ClipArtifactsConfig
from heaters_assets.materializations import check_result, per_video, video_ids
from heaters_assets.partitions import CLIP_BACKFILL_POLICY, source_videos_partitions
from heaters_assets.progress import run_log_progress
from heaters_resources import steps
from heaters_resources.db.engine import Database
from heaters_resources.orchestration import names
from heaters_resources.orchestration.resources import DatabaseResource, ObjectStoreResource
from heaters_resources.search.space import DESCRIPTOR_MODEL
from heaters_resources.settings import Settings
from heaters_resources.states import leases
from heaters_resources.steps import review_vectors
from heaters_resources.store import keys
from heaters_resources.store.objects import ObjectStore

KEYFRAMES = dg.AssetKey(names.KEYFRAMES_ASSET)
SPRITE_SHEET = dg.AssetKey(names.SPRITE_SHEET_ASSET)


def _check(
    context: dg.AssetExecutionContext,
    asset: dg.AssetKey,
    name: str,
    problems: list[str],
    checked: int,
    what: str,
) -> Iterator[dg.AssetCheckResult]:
    """The check's result, when the run selected that check (a subset may leave it out), with
    its verdict in words (``what``: what a passing clip has)."""
    if dg.AssetCheckKey(asset, name) in context.selected_asset_check_keys:
        yield check_result(name, problems, checked, what, asset=asset)


@dg.multi_asset(
    name="clip_artifacts",
    specs=[
        dg.AssetSpec(
            KEYFRAMES,
            deps=[clip_splits],
            group_name=names.CLIPS_GROUP,
            owners=names.asset_owners(),
            skippable=True,
            description="JPEG keyframes of each clip of the video (midpoint or 25/50/75 %).",
            kinds={"image"},
        ),
        dg.AssetSpec(
            SPRITE_SHEET,
            deps=[KEYFRAMES],
            group_name=names.CLIPS_GROUP,
            owners=names.asset_owners(),
            skippable=True,
            description="Sprite sheet for scrubbing + its metadata JSON for each clip of the "
            "video, which is then ready for review.",
            kinds={"image"},
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "keyframes_stored",
            asset=KEYFRAMES,
            description="Each clip has its keyframes in the store.",
        ),
        dg.AssetCheckSpec(
            "sprite_matches_image",
            asset=SPRITE_SHEET,
            description="Sprite metadata matches the stored image size; a clip not cut yet "
            "(HEATERS_CLIPS=proxy) has a review proxy of its frame count.",
        ),
    ],
    partitions_def=source_videos_partitions,
    backfill_policy=CLIP_BACKFILL_POLICY,
    op_tags=names.MEDIA_TAGS,
    can_subset=True,
)
def clip_artifacts(
    context: dg.AssetExecutionContext,
    config: ClipArtifactsConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
) -> Iterator[Any]:
    db, store = database.get_database(), object_store.get_store()
    with leases.holding(db, context.run.run_id):
        yield from _clip_artifacts(context, config, db, store)


def _clip_artifacts(
    context: dg.AssetExecutionContext,
    config: ClipArtifactsConfig,
    db: Database,
    store: ObjectStore,
) -> Iterator[Any]:
    selected = context.selected_asset_keys
    videos = video_ids(context)
    kf_clips = (
        steps.clips_of_videos(db, videos, steps.start_states("start_keyframing", config.overwrite))
        if KEYFRAMES in selected
        else []
    )
    sp_clips = (
        steps.clips_of_videos(
            db, videos, steps.start_states("start_sprite_generation", config.overwrite)
        )
        if SPRITE_SHEET in selected
        else []
    )
    # One decode of each source video makes both assets (heaters_resources.steps.artifacts).
    kf_out, sp_out = steps.make_artifacts(
        db,
        store,
        keyframe_ids=[ident for _, ident in kf_clips],
        sprite_ids=[ident for _, ident in sp_clips],
        sprites=SPRITE_SHEET in selected,
        strategy=config.strategy,
        sprite=steps.SpriteSettings(config.tile_width, config.max_fps, config.cols),
        overwrite=config.overwrite,
        progress=run_log_progress(context, "keyframes + sprites"),
        # Similar clips during review: the descriptor embeds the keyframes' frames in the pass.
        describe=DESCRIPTOR_MODEL if Settings.from_env().review_similar else None,
    )
    # Clips keyframed in this run got their sprite in it too.
    sp_all = sorted(set(sp_clips) | set(kf_clips), key=lambda c: keys.parse_clip_identifier(c[1]))
    figures = previews.clip_figures(db, [i for _, i in sp_all])
    similar = _review_vectors(context, sp_out)
    failed: list[steps.ClipBatchOutcome] = []
    if KEYFRAMES in selected:
        yield from _events(
            context,
            store,
            KEYFRAMES,
            "keyframe",
            kf_out,
            kf_clips,
            figures,
            common={"strategy": config.strategy, **similar},
        )
        problems = steps.artifact_problems(db, store, kf_out.done, "keyframe")
        yield from _check(
            context,
            KEYFRAMES,
            "keyframes_stored",
            problems,
            len(kf_out.done),
            "have every keyframe in the store",
        )
        failed += [kf_out] if kf_out.failed else []
    if SPRITE_SHEET in selected:
        params = {"tile_width": config.tile_width, "max_fps": config.max_fps, "cols": config.cols}
        yield from _events(
            context, store, SPRITE_SHEET, "sprite_sheet", sp_out, sp_all, figures, common=params
        )
        problems = steps.artifact_problems(db, store, sp_out.done, "sprite_sheet")
        yield from _check(
            context,
            SPRITE_SHEET,
            "sprite_matches_image",
            problems,
            len(sp_out.done),
            "have a sprite sheet whose metadata matches the stored image (and a review "
            "proxy when not cut yet)",
        )
        failed += [sp_out] if sp_out.failed else []
    for out in failed:
        out.raise_for_failures()


def _events(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    asset: dg.AssetKey,
    kind: str,
    out: steps.ClipBatchOutcome,
    clips: list[tuple[int, str]],
    figures: dict[str, previews.ClipFigures],
    common: dict[str, Any],
) -> Iterator[dg.AssetMaterialization]:
    """The asset's per-video materializations, each with its own first finished clip's image
    inline and links to the review page."""
    done = set(out.done)
    first: dict[int, str] = {}
    counts: dict[int, int] = {}
    for vid, ident in clips:
        if ident in done:
            first.setdefault(vid, ident)
            counts[vid] = counts.get(vid, 0) + 1
    extra = {
        vid: {
            "preview": dg.MetadataValue.md(
                previews.preview_markdown(store, figures[ident], kind, vid, counts[vid])
            )
        }
        for vid, ident in first.items()
        if ident in figures
    }
    yield from per_video(
        context, asset, out, clips, common=common, extra=extra, figures=figures, image_kind=kind
    )


def _review_vectors(
    context: dg.AssetExecutionContext, out: steps.ClipBatchOutcome
) -> dict[str, Any]:
    """What the pass stored for similar clips during review (HEATERS_REVIEW_SIMILAR, on by
    default), in words for the metadata; a problem is logged, never fails the run."""
    made = out.details.get(review_vectors.KEY)
    if not made:
        return {}
    if made.get("error"):
        context.log.warning(f"similar clips during review: {made['error']}")
        return {"review_descriptor": f"failed: {made['error']}"}
    missing = made.get("missing") or {}
    if missing:
        context.log.warning(
            f"similar clips during review: {len(missing)} clip(s) without a vector: "
            + "; ".join(f"{k}: {v}" for k, v in list(missing.items())[:5])
        )
    return {
        "review_descriptor": f"{made['stored']} clips embedded with {made['model']} "
        "from the pass's frames"
    }
