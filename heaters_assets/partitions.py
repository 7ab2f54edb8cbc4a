"""Dynamic partitions: one per source video (its id) and one per clip (its identifier).

Clip identifiers (``<video_id>_<start>_<end>``) are added in creation order, so the clips of one
splice are contiguous and one run can take them all as a partition range.
"""

import dagster as dg

SOURCE_VIDEOS = "source_videos"
CLIPS = "clips"

source_videos_partitions = dg.DynamicPartitionsDefinition(name=SOURCE_VIDEOS)
clips_partitions = dg.DynamicPartitionsDefinition(name=CLIPS)

# Per-clip assets take many partitions per run: a 1,000-clip backfill is ten runs, not 1,000.
CLIP_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=100)

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run materialize every partition from ``first`` to ``last``."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}
