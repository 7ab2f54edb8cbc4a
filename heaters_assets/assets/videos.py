"""Per-video assets: ``source_video`` (ingest + normalize + probe) and ``clip_splits``.

Thin wrappers: the work and the state transitions live in ``heaters_resources.steps``; here we
add what Dagster users see (metadata, progress, checks, clip partitions).
"""

import dagster as dg

from heaters_assets.config import IngestConfig, SceneConfig
from heaters_assets.materializations import TABLE_ROWS, check_result
from heaters_assets.partitions import source_videos_partitions
from heaters_assets.previews import clip_figures
from heaters_assets.progress import run_log_progress
from heaters_resources import steps
from heaters_resources.db.engine import Database
from heaters_resources.orchestration import names
from heaters_resources.orchestration.resources import DatabaseResource, ObjectStoreResource
from heaters_resources.settings import Settings
from heaters_resources.states import leases

#: Cut frames listed in the metadata (a long video names the first ones and the count).
CUTS_SHOWN = 40

_CLIP_TABLE = dg.TableSchema(
    columns=[
        dg.TableColumn("clip", "string"),
        dg.TableColumn("start_frame", "int"),
        dg.TableColumn("frames", "int"),
        dg.TableColumn("duration_s", "float"),
        dg.TableColumn("review", "string", description="the clip on the review page"),
    ]
)


def _clip_table(db: Database, identifiers: list[str]) -> dg.MetadataValue:
    """The video's clips (the first TABLE_ROWS) as a table rather than a JSON list of cuts."""
    figures = clip_figures(db, identifiers[:TABLE_ROWS])
    rows = [
        dg.TableRecord(
            {
                "clip": f.identifier,
                "start_frame": f.start_frame,
                "frames": f.frames,
                "duration_s": f.duration,
                "review": f.review,
            }
        )
        for f in sorted(figures.values(), key=lambda f: f.start_frame)
    ]
    return dg.MetadataValue.table(rows, schema=_CLIP_TABLE)


@dg.asset(
    partitions_def=source_videos_partitions,
    group_name=names.VIDEOS_GROUP,
    owners=names.asset_owners(),
    op_tags=names.MEDIA_TAGS,
    description="The video, fetched (yt-dlp) or copied, normalized when needed, probed, stored.",
    kinds={"video"},
)
def source_video(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:
    video_id = int(context.partition_key)
    db = database.get_database()
    with leases.holding(db, context.run.run_id):
        out = steps.ingest_source_video(
            db,
            object_store.get_store(),
            video_id,
            max_height=config.max_height,
            force_normalize=config.force_normalize,
            overwrite=config.overwrite,
            progress=run_log_progress(context, f"ingest {video_id}"),
        )
    if out.skipped:
        context.log.info(f"video {video_id} was already ingested; set overwrite to fetch it again")
    return dg.MaterializeResult(
        metadata={
            "title": out.title or "",
            "duration_s": out.duration,
            "fps": out.fps,
            "frames": out.frame_count,
            "resolution": f"{out.width}x{out.height}",
            "size_mb": round(out.size_bytes / 1e6, 2),
            "normalize_action": out.normalize_action,
            "original_key": out.original_key,
            "normalized_key": out.normalized_key or "(original kept)",
            "seconds": round(out.seconds, 2),
            "skipped": out.skipped,
        }
    )


@dg.asset(
    partitions_def=source_videos_partitions,
    group_name=names.VIDEOS_GROUP,
    owners=names.asset_owners(),
    deps=[source_video],
    op_tags=names.MEDIA_TAGS,
    description="Scene detection and the video's clips: rows over its frame ranges, each "
    "clip's file cut when it is approved (HEATERS_CLIPS=proxy, the default) or cut now, frame "
    "exact (exact).",
    check_specs=[
        dg.AssetCheckSpec(
            "clips_tile_video",
            asset="clip_splits",
            description="Clips cover the video without gap or overlap.",
        )
    ],
    kinds={"video"},
)
def clip_splits(
    context: dg.AssetExecutionContext,
    config: SceneConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
) -> dg.MaterializeResult:
    video_id = int(context.partition_key)
    db = database.get_database()
    with leases.holding(db, context.run.run_id):
        out = steps.splice_source_video(
            db,
            object_store.get_store(),
            video_id,
            detector=config.detector,
            threshold=config.threshold,
            min_scene_len=config.min_scene_len,
            short_policy=config.short_policy,
            trim_transitions=config.trim_transitions,
            clips=config.clips or Settings.from_env().clips,
            overwrite=config.overwrite,
            progress=run_log_progress(context, f"splice {video_id}"),
        )
    if out.skipped:
        context.log.info(f"video {video_id} was already spliced; set overwrite to cut it again")
    if out.retired_identifiers:
        context.log.info(f"replaced {len(out.retired_identifiers)} earlier clips of the video")
    gaps = steps.tiling_problems(db, video_id)
    return dg.MaterializeResult(
        metadata={
            "clips": len(out.identifiers),
            "short_clips": out.short_clips,
            "cut_frames": ", ".join(map(str, out.cut_frames[:CUTS_SHOWN]))
            + (f" ... ({len(out.cut_frames)} cuts)" if len(out.cut_frames) > CUTS_SHOWN else ""),
            "clip_table": _clip_table(db, out.identifiers),
            "first_clip": out.identifiers[0] if out.identifiers else "",
            "last_clip": out.identifiers[-1] if out.identifiers else "",
            "clip_files": "cut when approved (review proxies)"
            if out.scene_params.get("clips") == "proxy"
            else "cut now",
            "stream_copied": out.copied,
            "re_encoded": out.encoded,
            "frames_analysed": out.frames_analysed,
            "detect_seconds": round(out.detect_seconds, 2),
            "split_seconds": round(out.split_seconds, 2),
            "scene_params": dg.MetadataValue.json(out.scene_params),
            "retired_clips": len(out.retired_identifiers),
            "skipped": out.skipped,
        },
        check_results=[
            check_result("clips_tile_video", gaps, len(out.identifiers), "clips tile the video")
        ],
    )
