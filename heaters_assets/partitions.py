"""Partitions: one per source video (its id), for every asset.

Clip-level assets (``keyframes``, ``sprite_sheet``, ``clip_embedding``) are partitioned by video
too (ARCHITECTURE.md, "Dagster shape"): the partition count grows with videos, not clips, and a
run for a video processes that video's clips in one pass. Clip rows in Postgres are the truth
about each clip; a partition's materialization describes exactly its own clips.
"""

import dagster as dg

from heaters_resources.orchestration.names import SOURCE_VIDEOS, partition_range_tags
from heaters_resources.orchestration.ranges import VIDEOS_PER_EMBEDDING_RUN, VIDEOS_PER_MEDIA_RUN

__all__ = [
    "CLIP_BACKFILL_POLICY",
    "EMBEDDING_BACKFILL_POLICY",
    "SOURCE_VIDEOS",
    "VIDEOS_PER_EMBEDDING_RUN",
    "VIDEOS_PER_MEDIA_RUN",
    "partition_range_tags",
    "source_videos_partitions",
]

source_videos_partitions = dg.DynamicPartitionsDefinition(name=SOURCE_VIDEOS)

CLIP_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=VIDEOS_PER_MEDIA_RUN)
EMBEDDING_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(
    max_partitions_per_run=VIDEOS_PER_EMBEDDING_RUN
)
