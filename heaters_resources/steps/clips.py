"""Which clips a run over video partitions works on, and the outcome of a batch step.

The keyframe and sprite steps themselves are in :mod:`heaters_resources.steps.artifacts`."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip
from heaters_resources.errors import NotFoundError
from heaters_resources.states import leases
from heaters_resources.steps.common import (
    StepFailedError,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ clips


def clips_of_videos(
    db: Database, video_ids: Sequence[int], clip_states: Collection[str] | None = None
) -> list[tuple[int, str]]:
    """(video id, identifier) of the live clips of ``video_ids`` (in ``clip_states`` when given),
    by video then position: what a run over those video partitions works on.

    Clips left in an in-progress state by a dead worker are first sent back to their failed
    state (`states.leases`), so a run asked for the failed states picks them up instead of
    passing over them."""
    if clip_states is not None:
        leases.reap(db, entity="clip", video_ids=video_ids)
    stmt = (
        select(Clip.source_video_id, Clip.identifier)
        .where(Clip.source_video_id.in_(list(video_ids)), Clip.superseded_at.is_(None))
        .order_by(Clip.source_video_id, Clip.start_frame)
    )
    if clip_states is not None:
        stmt = stmt.where(Clip.state.in_(list(clip_states)))
    with db.session() as session:
        return [(int(v), str(i)) for v, i in session.execute(stmt)]


def start_states(action: str, overwrite: bool) -> frozenset[str]:
    """The clip states from which ``action`` may start (the transition table's rule)."""
    rule = states.TRANSITIONS[("clip", action)]
    return rule.from_states | (rule.overwrite_from if overwrite else frozenset())


def clips_by_identifier(db: Database, identifiers: Sequence[str]) -> list[Clip]:
    """Clips for partition keys, in the order given; unknown identifiers raise NotFoundError."""
    with db.session() as session:
        found = {
            c.identifier: c
            for c in session.scalars(select(Clip).where(Clip.identifier.in_(list(identifiers))))
        }
    missing = [i for i in identifiers if i not in found]
    if missing:
        raise NotFoundError(f"unknown clip(s): {', '.join(missing[:10])}")
    return [found[i] for i in identifiers]


@dataclass
class ClipBatchOutcome:
    step: str
    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    artifacts: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def raise_for_failures(self) -> None:
        if self.failed:
            raise StepFailedError(self.step, self.failed)


def sprite_params(tile_width: int, max_fps: float, cols: int) -> str:
    """The sprite's key token: its parameters, so different settings never overwrite each other."""
    return f"w{tile_width}_fps{max_fps:g}_c{cols}".replace(".", "p")
