"""Write side of the review app: one review action = one `states` call (which writes the
`review_events` row and the transition in one transaction), plus soft queue claims.

Errors become an `ActionOutcome` with a message a reviewer can act on; nothing here retries,
so an action is applied at most once. The page sends the clip's `version` it showed, and the
state layer refuses the action if the clip changed meanwhile (`states.StaleActionError`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.errors import (
    ConflictError,
    HeatersStateError,
    InvalidClipsError,
    InvalidTransitionError,
    NotFoundError,
)
from heaters_resources.review import queries

ACTIONS = ("approve", "skip", "archive", "merge", "split")
DONE_MESSAGES = {
    "approve": "Approved.",
    "skip": "Skipped.",
    "archive": "Archived (undo possible until the archive job deletes its files).",
    "merge": "Merge requested: a Dagster run will join the two clips.",
    "split": "Split requested: a Dagster run will cut the clip.",
}


@dataclass(frozen=True)
class ActionOutcome:
    ok: bool
    message: str
    kind: str = "ok"  # ok | stale | conflict | invalid | not_found
    event_id: int | None = None
    clip_id: int | None = None

    @property
    def status_code(self) -> int:
        return {"ok": 200, "stale": 409, "conflict": 409, "invalid": 422, "not_found": 404}.get(
            self.kind, 400
        )


def perform(
    db: Database, action: str, clip_id: int, *, version: str, actor: str, frame: int | None = None
) -> ActionOutcome:
    """Apply one review action to `clip_id` if it is still at `version`."""
    if action not in ACTIONS:
        return ActionOutcome(False, f"unknown action {action!r}", "invalid")
    if not version:
        return ActionOutcome(
            False, "the page did not say which version of the clip it showed; reload", "stale"
        )
    try:
        if action == "approve":
            eid = states.approve_clip(db, clip_id, actor, expected_version=version)
        elif action == "skip":
            eid = states.skip_clip(db, clip_id, actor, expected_version=version)
        elif action == "archive":
            eid = states.archive_clip(db, clip_id, actor, expected_version=version)
        elif action == "merge":
            eid = states.request_merge(db, clip_id, actor, expected_version=version)
        else:
            if frame is None:
                return ActionOutcome(False, "split needs a frame", "invalid")
            eid = states.request_split(db, clip_id, frame, actor, expected_version=version)
    except HeatersStateError as exc:
        return _refused(exc, clip_id)
    return ActionOutcome(True, DONE_MESSAGES[action], event_id=eid, clip_id=clip_id)


def undo_last(db: Database, actor: str) -> ActionOutcome:
    """Undo this reviewer's newest action, unless someone acted on the clip since or the
    archive job already deleted its files (then say so)."""
    latest = queries.latest_undoable_event(db, actor)
    if latest is None:
        return ActionOutcome(False, "Nothing to undo.", "invalid")
    event_id, clip_ids = latest
    clip_id = clip_ids[-1]
    newest, newest_action, version = queries.latest_event_on_clip(db, clip_id)
    if newest != event_id and newest_action != "purge":
        return ActionOutcome(
            False,
            f"Cannot undo: clip {clip_id} was changed by another action after yours.",
            "stale",
            clip_id=clip_id,
        )
    try:
        eid = states.undo_review(db, clip_id, actor, expected_version=version)
    except InvalidTransitionError as exc:
        return ActionOutcome(False, "Cannot undo: " + _undo_reason(exc), "invalid", clip_id=clip_id)
    except HeatersStateError as exc:
        return _refused(exc, clip_id)
    return ActionOutcome(
        True, "Undone: the clip is back in the queue.", event_id=eid, clip_id=clip_id
    )


def _undo_reason(exc: InvalidTransitionError) -> str:
    if exc.reason:
        return exc.reason
    if exc.state == "archived":
        return "the job already ran and replaced the clips with new ones."
    if exc.state in ("spliced", "keyframing", "keyframed", "generating_sprite"):
        return "the job already ran."
    return f"the clip is now {exc.state}."


def _refused(exc: HeatersStateError, clip_id: int) -> ActionOutcome:
    if isinstance(exc, states.StaleActionError):
        kind, text = "stale", f"Refused: {exc}"
    elif isinstance(exc, ConflictError):
        kind, text = "conflict", "Refused: another action on this clip is in progress; retry."
    elif isinstance(exc, NotFoundError):
        kind, text = "not_found", f"Refused: {exc}"
    elif isinstance(exc, InvalidTransitionError):
        kind, text = (
            "stale",
            (
                f"Refused: the clip is {exc.state} now, not pending review "
                "(another reviewer may have acted on it); reload."
            ),
        )
    elif isinstance(exc, InvalidClipsError):
        kind, text = "invalid", f"Refused: {exc}"
    else:
        kind, text = "invalid", f"Refused: {exc}"
    return ActionOutcome(False, text, kind, clip_id=clip_id)


class Claims:
    """Soft, in-process claims so two reviewers are shown different clips.

    They only steer the queue; correctness does not depend on them (the version check in the
    state layer refuses a second action on a clip whatever the claims say).
    """

    def __init__(self, ttl_seconds: float = 300.0) -> None:
        self.ttl = ttl_seconds
        self._by_clip: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for cid in [c for c, (_, until) in self._by_clip.items() if until < now]:
            del self._by_clip[cid]

    def pick(self, candidates: list[int], sid: str) -> int | None:
        """The caller's own claimed clip if still a candidate, else the first unclaimed one."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            mine = [c for c in candidates if self._by_clip.get(c, ("",))[0] == sid]
            free = [c for c in candidates if c not in self._by_clip]
            chosen = next(iter(mine or free), None)
            if chosen is not None:
                for cid in [c for c, (owner, _) in self._by_clip.items() if owner == sid]:
                    del self._by_clip[cid]
                self._by_clip[chosen] = (sid, now + self.ttl)
            return chosen

    def holder(self, clip_id: int) -> str | None:
        with self._lock:
            self._expire(time.monotonic())
            entry = self._by_clip.get(clip_id)
            return entry[0] if entry else None

    def release(self, clip_id: int, sid: str) -> None:
        with self._lock:
            if self._by_clip.get(clip_id, ("",))[0] == sid:
                del self._by_clip[clip_id]
