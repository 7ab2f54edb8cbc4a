"""The transition table of the state machine (ARCHITECTURE.md, "State machines"): every
allowed transition of a source video or a clip is one row of `TRANSITIONS`, and the value types
that the transition functions take and return. No database code here: a reader sees every
rule in one screen, and the mutation tests aim at this table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Entity = Literal["source_video", "clip"]


@dataclass(frozen=True)
class Transition:
    """`from_states -> to_state`; `overwrite_from` is also allowed when re-running a done step."""

    from_states: frozenset[str]
    to_state: str
    overwrite_from: frozenset[str] = frozenset()


def _t(src: Iterable[str], dst: str, overwrite: Iterable[str] = ()) -> Transition:
    return Transition(frozenset(src), dst, frozenset(overwrite))


REVIEW_OUTCOMES = frozenset({"approved", "skipped", "archived", "merging", "splitting"})

TRANSITIONS: dict[tuple[Entity, str], Transition] = {
    # source video: new -> downloading -> downloaded -> splicing -> spliced
    ("source_video", "start_downloading"): _t(
        {"new", "ingestion_failed"}, "downloading", {"downloaded", "splicing_failed"}
    ),
    ("source_video", "complete_downloading"): _t({"downloading"}, "downloaded"),
    ("source_video", "start_splicing"): _t(
        {"downloaded", "splicing_failed"}, "splicing", {"spliced"}
    ),
    ("source_video", "complete_splicing"): _t({"splicing"}, "spliced"),
    ("source_video", "fail_download"): _t({"downloading"}, "ingestion_failed"),
    ("source_video", "fail_splice"): _t({"splicing"}, "splicing_failed"),
    # clip processing: spliced -> keyframing -> keyframed -> generating_sprite -> pending_review
    ("clip", "start_keyframing"): _t(
        {"spliced", "keyframing_failed"},
        "keyframing",
        {"keyframed", "sprite_failed", "pending_review"},
    ),
    ("clip", "complete_keyframing"): _t({"keyframing"}, "keyframed"),
    ("clip", "start_sprite_generation"): _t(
        {"keyframed", "sprite_failed"}, "generating_sprite", {"pending_review"}
    ),
    ("clip", "complete_sprite_generation"): _t({"generating_sprite"}, "pending_review"),
    # review
    ("clip", "approve"): _t({"pending_review"}, "approved"),
    ("clip", "skip"): _t({"pending_review"}, "skipped"),
    ("clip", "archive"): _t({"pending_review", "skipped"}, "archived"),
    ("clip", "request_merge"): _t({"pending_review"}, "merging"),
    # the previous clip of a merge may be reviewed already; an embedded one loses its vector
    # when the merge completes (`review._supersede`), and the merged clip is embedded anew
    ("clip", "merge_into_next"): _t(
        {"pending_review", "approved", "skipped", "embedded", "embedding_failed"}, "merging"
    ),
    ("clip", "request_split"): _t({"pending_review"}, "splitting"),
    ("clip", "complete_merge"): _t({"merging"}, "archived"),
    ("clip", "complete_split"): _t({"splitting"}, "archived"),
    ("clip", "undo"): _t(REVIEW_OUTCOMES, "pending_review"),
    ("clip", "reopen"): _t({"skipped"}, "pending_review"),  # a skipped clip back in the queue
    # embedding: approved -> embedding -> embedded
    ("clip", "start_embedding"): _t({"approved", "embedding_failed"}, "embedding", {"embedded"}),
    ("clip", "complete_embedding"): _t({"embedding"}, "embedded"),
    # failures (retryable: the failed state is a start state of the same step)
    ("clip", "fail_keyframe"): _t({"keyframing"}, "keyframing_failed"),
    ("clip", "fail_sprite"): _t({"generating_sprite"}, "sprite_failed"),
    ("clip", "fail_embedding"): _t({"embedding"}, "embedding_failed"),
    ("clip", "fail_merge"): _t({"merging"}, "pending_review"),
    ("clip", "fail_split"): _t({"splitting"}, "pending_review"),
}

FAIL_STEPS: dict[Entity, tuple[str, ...]] = {
    "source_video": ("download", "splice"),
    "clip": ("keyframe", "sprite", "embedding", "merge", "split"),
}

# ---------------------------------------------------------------------------- specs and results


@dataclass(frozen=True)
class ClipSpec:
    """One clip of a splice: frames [start_frame, end_frame), end exclusive."""

    start_frame: int
    end_frame: int
    storage_key: str | None = None  # default: keys.clip_key(video_id, identifier)
    short: bool = False  # shorter than the minimum scene length (kept out of review)
    #: False: no file yet, the clip is a frame range of its source (HEATERS_CLIPS=proxy).
    cut: bool = True


@dataclass(frozen=True)
class ArtifactSpec:
    """One derived object of a clip (a keyframe, a sprite sheet or a review proxy) already in
    the store."""

    kind: Literal["keyframe", "sprite_sheet", "proxy"]
    strategy: str
    storage_key: str
    tag: str = ""
    sidecar_key: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TransitionResult:
    entity: Entity
    id: int
    from_state: str
    to_state: str
