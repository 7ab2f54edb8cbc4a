"""Dynamic partitions: one per source video (its id) and one per clip (its identifier).

Clip identifiers (``<video_id>_<start>_<end>``) are added in creation order, so the clips of one
splice are contiguous and one run can take them all as a partition range.
"""

import dagster as dg

from heaters_resources.orchestration.names import CLIPS, SOURCE_VIDEOS, partition_range_tags
from heaters_resources.steps.embeddings import EMBED_CLIPS_PER_RUN

__all__ = [
    "CLIPS",
    "CLIP_BACKFILL_POLICY",
    "EMBEDDING_BACKFILL_POLICY",
    "SOURCE_VIDEOS",
    "clips_partitions",
    "partition_range_tags",
    "source_videos_partitions",
]


source_videos_partitions = dg.DynamicPartitionsDefinition(name=SOURCE_VIDEOS)
clips_partitions = dg.DynamicPartitionsDefinition(name=CLIPS)

# Per-clip assets take many partitions per run: a 1,000-clip backfill is ten runs, not 1,000.
CLIP_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=100)
# Embedding runs go one at a time, so they take bigger batches (see EMBED_CLIPS_PER_RUN).
EMBEDDING_BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=EMBED_CLIPS_PER_RUN)
