"""The review page's "recent actions": what each action did (the states it replaced and the
state it set, from `review_events`) and what became of it (jobs, new clips, undo).

Pure functions over rows `queries.recent_events` read; a batch of the grid page (one action
on many clips, the same `payload.batch`) is one entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from heaters_resources.db.models import Clip, ReviewEvent
from heaters_resources.states import review as review_states


@dataclass
class NewClip:
    id: int
    identifier: str
    state: str


@dataclass
class EventView:
    id: int
    action: str
    label: str
    created_at: datetime
    identifiers: list[str]
    status: str  # pending | done | failed | undone
    text: str
    new_clips: list[NewClip] = field(default_factory=list)
    run_status: str | None = None
    run_id: str | None = None
    did: str = ""  # what the action did: the states it replaced -> the state it set
    count: int = 1  # clips of a batch (the grid's one action on many clips)

    @property
    def pending(self) -> bool:
        return self.status == "pending"


def batched(events: Sequence[ReviewEvent], limit: int) -> list[tuple[Any, ...]]:
    """(newest id, action, time, clip ids, previous states, event ids) per entry, newest
    first: consecutive events of one batch (`payload.batch`) are one entry."""
    out: list[list[Any]] = []
    last_batch = None
    for e in events:
        batch = (e.payload or {}).get("batch")
        if batch is not None and batch == last_batch and out:
            out[-1][3] += list(e.clip_ids)
            out[-1][4] += list(e.previous_states)
            out[-1][5].append(e.id)
            continue
        if len(out) == limit:
            break
        last_batch = batch
        out.append(
            [e.id, e.action, e.created_at, list(e.clip_ids), list(e.previous_states), [e.id]]
        )
    return [tuple(entry) for entry in out]


def describe(
    view: EventView, clips: Sequence[Clip], undone: bool, purged: bool, kids: list[NewClip]
) -> None:
    states_now = {c.state for c in clips}
    if undone:
        view.status, view.text = "undone", "undone"
    elif view.action in ("approve", "skip", "reopen"):
        now = states_now - {review_states.UNDO_EXPECTS[view.action]}
        view.text = f"now {', '.join(sorted(now))}" if now else ""
    elif view.action == "archive":
        if purged:
            view.text = "archived; its files were deleted by the archive job"
        elif states_now == {"archived"}:
            view.status = "pending"
            view.text = "archived; files are deleted after the grace period (undo until then)"
        else:
            view.text = ", ".join(sorted(states_now))
    elif kids:
        view.new_clips = kids
        waiting = [
            k
            for k in kids
            if k.state in ("spliced", "keyframing", "keyframed", "generating_sprite")
        ]
        view.status = "pending" if waiting else "done"
        view.text = "new clips: keyframes and sprites being made" if waiting else "new clips ready"
    elif states_now <= {"merging", "splitting"}:
        view.status, view.text = "pending", "waiting for the Dagster run"
    else:
        errors = "; ".join(c.error for c in clips if c.error)
        view.status = "failed"
        view.text = f"failed: {errors}" if errors else f"clips now {', '.join(sorted(states_now))}"
