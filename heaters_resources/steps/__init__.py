"""Processing steps: one pure ``heaters_media`` function between two state transitions.

Each step follows the same discipline, which is what makes retries safe:

1. move the row to the step's in-progress state (validated, under a row lock);
2. fetch inputs from the object store into a private temporary folder;
3. run the pure ``heaters_media`` function;
4. upload every output *before* the row that points at it is committed;
5. complete the transition (new rows/artifacts in one transaction);

and on any failure, move the row to the step's ``*_failed`` state with the reason and re-raise.
The Dagster assets are thin wrappers over these functions, and the "no Dagster" benchmark calls
them directly, so both measure the same work. One module per step family: ``videos`` (ingest,
splice), ``clips`` (keyframes, sprites), ``embeddings``, ``review`` (merge, split, purge), and
``checks`` (the invariants behind the asset checks). The embedding step is imported from its
module (``heaters_resources.steps.embeddings``): it is the only one that may load a model.
"""

from __future__ import annotations

from heaters_resources.steps.artifacts import (
    SpriteSettings,
    keyframe_clips,
    make_artifacts,
    sprite_clips,
)
from heaters_resources.steps.checks import (
    artifact_problems,
    embedding_problems,
    sprite_key_of,
    tiling_problems,
)
from heaters_resources.steps.clips import (
    ClipBatchOutcome,
    clips_by_identifier,
    clips_of_videos,
    sprite_params,
    start_states,
)
from heaters_resources.steps.common import (
    StepFailedError,
    describe_error,
    fetch,
    scratch_dir,
)
from heaters_resources.steps.review import (
    PurgeOutcome,
    ReviewJobOutcome,
    clip_object_keys,
    execute_merge,
    execute_split,
    purge_archived_clips,
)
from heaters_resources.steps.videos import (
    IngestOutcome,
    SpliceOutcome,
    clip_identifiers_of_video,
    ingest_source_path,
    ingest_source_video,
    playable_key,
    splice_source_video,
)

__all__ = [
    "ClipBatchOutcome",
    "IngestOutcome",
    "PurgeOutcome",
    "ReviewJobOutcome",
    "SpliceOutcome",
    "SpriteSettings",
    "StepFailedError",
    "artifact_problems",
    "clip_identifiers_of_video",
    "clip_object_keys",
    "clips_by_identifier",
    "clips_of_videos",
    "describe_error",
    "embedding_problems",
    "execute_merge",
    "execute_split",
    "fetch",
    "ingest_source_path",
    "ingest_source_video",
    "keyframe_clips",
    "make_artifacts",
    "playable_key",
    "purge_archived_clips",
    "scratch_dir",
    "splice_source_video",
    "sprite_clips",
    "sprite_key_of",
    "sprite_params",
    "start_states",
    "tiling_problems",
]
