"""The state machine (ARCHITECTURE.md, "State machines"): every transition of a source video or
a clip, validated against one table (`states.table`) under row locks (`states.core`).

Callers use this package as one namespace (`from heaters_resources import states`;
`states.approve_clip(...)`); the sub-modules group the transitions by what they move. The
errors a refused transition raises are re-exported, so `except states.InvalidTransitionError`
reads where the transition is called.
"""

from __future__ import annotations

from heaters_resources.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidClipsError,
    InvalidTransitionError,
    MissingObjectError,
    NotFoundError,
)
from heaters_resources.states.clips import (
    complete_keyframing,
    complete_keyframing_many,
    complete_sprite_generation,
    complete_sprite_generation_many,
    get_clip,
    record_clip_files,
    start_keyframing,
    start_keyframing_many,
    start_sprite_generation,
    start_sprite_generation_many,
)
from heaters_resources.states.core import (
    EXCLUSION_VIOLATION,
    LOCK_NOT_AVAILABLE,
    mark_failed,
    schedule_deletion,
)
from heaters_resources.states.embeddings import (
    complete_embedding,
    complete_embedding_many,
    start_embedding,
    start_embedding_many,
    store_embedding,
    store_embeddings,
)
from heaters_resources.states.review import (
    StaleActionError,
    approve_clip,
    archive_clip,
    clip_version,
    complete_merge,
    complete_split,
    reopen_clip,
    request_merge,
    request_split,
    skip_clip,
    undo_review,
)
from heaters_resources.states.review_batch import BatchResult, review_many, undo_batch
from heaters_resources.states.table import (
    FAIL_STEPS,
    REVIEW_OUTCOMES,
    TRANSITIONS,
    ArtifactSpec,
    ClipSpec,
    Entity,
    Transition,
    TransitionResult,
)
from heaters_resources.states.videos import (
    SOURCE_METADATA_FIELDS,
    complete_downloading,
    create_clips_from_splice,
    create_source_video,
    get_source_video,
    move_source,
    register_source_video,
    start_downloading,
    start_splicing,
)

__all__ = [
    "EXCLUSION_VIOLATION",
    "FAIL_STEPS",
    "LOCK_NOT_AVAILABLE",
    "REVIEW_OUTCOMES",
    "SOURCE_METADATA_FIELDS",
    "TRANSITIONS",
    "AlreadyExistsError",
    "ArtifactSpec",
    "BatchResult",
    "ClipSpec",
    "ConflictError",
    "Entity",
    "InvalidClipsError",
    "InvalidTransitionError",
    "MissingObjectError",
    "NotFoundError",
    "StaleActionError",
    "Transition",
    "TransitionResult",
    "approve_clip",
    "archive_clip",
    "clip_version",
    "complete_downloading",
    "complete_embedding",
    "complete_embedding_many",
    "complete_keyframing",
    "complete_keyframing_many",
    "complete_merge",
    "complete_split",
    "complete_sprite_generation",
    "complete_sprite_generation_many",
    "create_clips_from_splice",
    "create_source_video",
    "get_clip",
    "get_source_video",
    "mark_failed",
    "move_source",
    "record_clip_files",
    "register_source_video",
    "reopen_clip",
    "request_merge",
    "request_split",
    "review_many",
    "schedule_deletion",
    "skip_clip",
    "start_downloading",
    "start_embedding",
    "start_embedding_many",
    "start_keyframing",
    "start_keyframing_many",
    "start_splicing",
    "start_sprite_generation",
    "start_sprite_generation_many",
    "store_embedding",
    "store_embeddings",
    "undo_batch",
    "undo_review",
]
