"""Every Dagster name the platform uses, in one place: assets, jobs, partitions and run tags.

The CLI and the review app launch and look up runs by these names without importing
``heaters_assets`` (ARCHITECTURE.md, "Layers"), and ``dagster.yaml``'s concurrency limits key on
the resource tag, so a rename here is a rename everywhere (the YAML is checked by a test).
"""

from __future__ import annotations

from typing import Final

#: The module `dagster` loads (`-m`) to find the Definitions.
DEFINITIONS_MODULE: Final = "heaters_assets.definitions"

# ------------------------------------------------------------------------------ partitions
#: The one partitions definition: every asset is partitioned by source video (its id).
SOURCE_VIDEOS: Final = "source_videos"

# ------------------------------------------------------------------------------ assets
SOURCE_VIDEO_ASSET: Final = "source_video"
CLIP_SPLITS_ASSET: Final = "clip_splits"
KEYFRAMES_ASSET: Final = "keyframes"
SPRITE_SHEET_ASSET: Final = "sprite_sheet"
CLIP_EMBEDDING_ASSET: Final = "clip_embedding"
VIDEOS_GROUP: Final = "videos"
CLIPS_GROUP: Final = "clips"

# ------------------------------------------------------------------------------ jobs
INGEST_VIDEO_JOB: Final = "ingest_video_job"
#: One video from download to review-ready clips in one run (what `heaters demo` runs).
VIDEO_JOB: Final = "video_job"
CLIP_ARTIFACTS_JOB: Final = "clip_artifacts_job"
EMBED_CLIPS_JOB: Final = "embed_clips_job"
REVIEW_ACTION_JOB: Final = "review_action_job"

# ------------------------------------------------------------------------------ run tags
#: Concurrency class of a run (dagster.yaml's `tag_concurrency_limits` key on it).
RESOURCE_TAG: Final = "heaters/resource"
MEDIA: Final = "media"
EMBEDDING: Final = "embedding"
MEDIA_TAGS: Final = {RESOURCE_TAG: MEDIA}
EMBEDDING_TAGS: Final = {RESOURCE_TAG: EMBEDDING}
#: The review event a review-action run carries out, and its action.
REVIEW_EVENT_TAG: Final = "heaters/review_event"
REVIEW_ACTION_TAG: Final = "heaters/action"
#: Dagster's own tags that make one run take a range of partitions.
PARTITION_RANGE_START_TAG: Final = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG: Final = "dagster/asset_partition_range_end"


def asset_owners() -> list[str]:
    """Owners shown on every asset (HEATERS_ASSET_OWNERS), so the UI says whom to ask."""
    from heaters_resources.settings import Settings

    return list(Settings.from_env().asset_owners)


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run take every partition from ``first`` to ``last``."""
    return {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}
