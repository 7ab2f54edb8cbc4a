"""Write side of the review app: one review action = one `states` call (which writes the
`review_events` row(s) and the transition in one transaction); a batch of the grid page is one
`states.review_many` call and is undone as one.

Errors become an `ActionOutcome` with a message a reviewer can act on; nothing here retries,
so an action is applied at most once. The page sends the clip's `version` it showed, and the
state layer refuses the action if the clip changed meanwhile (`states.StaleActionError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
from heaters_resources.states.review_batch import BATCH_ACTIONS

ACTIONS = ("approve", "skip", "archive", "reopen", "merge", "split")
DONE_MESSAGES = {
    "approve": "Approved.",
    "skip": "Skipped.",
    "archive": "Archived (undo possible until the archive job deletes its files).",
    "reopen": "Reopened: the clip is back in the review queue.",
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


@dataclass(frozen=True)
class BatchOutcome(ActionOutcome):
    done: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


def perform(
    db: Database,
    action: str,
    clip_id: int,
    *,
    version: str,
    actor: str,
    frame: int | None = None,
    previous: tuple[int, str] | None = None,
) -> ActionOutcome:
    """Apply one review action to `clip_id` if it is still at `version` (a merge: and its
    neighbour, when `previous` says which one the reviewer was shown, at that version)."""
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
        elif action == "reopen":
            eid = states.reopen_clip(db, clip_id, actor, expected_version=version)
        elif action == "merge":
            eid = states.request_merge(
                db, clip_id, actor, expected_version=version, expected_previous=previous
            )
        else:
            if frame is None:
                return ActionOutcome(False, "split needs a frame", "invalid")
            eid = states.request_split(db, clip_id, frame, actor, expected_version=version)
    except HeatersStateError as exc:
        return _refused(exc, clip_id)
    return ActionOutcome(True, DONE_MESSAGES[action], event_id=eid, clip_id=clip_id)


def perform_batch(
    db: Database, action: str, items: Sequence[tuple[int, str]], *, actor: str
) -> BatchOutcome:
    """One action on many (clip id, version) pairs; clips that changed meanwhile are left out
    and named in the message."""
    if action not in BATCH_ACTIONS:
        return BatchOutcome(False, f"unknown batch action {action!r}", "invalid")
    try:
        result = states.review_many(db, action, items, actor)
    except HeatersStateError as exc:
        refused = _refused(exc, 0)
        return BatchOutcome(False, refused.message, refused.kind)
    done = sorted(result.events)
    verb = DONE_MESSAGES[action].split(" ")[0].rstrip(".:")
    text = f"{verb} {len(done)} clip{'s' if len(done) != 1 else ''}."
    if result.refused:
        first = next(iter(result.refused.items()))
        text += f" {len(result.refused)} refused (clip {first[0]} {first[1]}); reload."
    kind = "ok" if done else "stale"
    return BatchOutcome(bool(done), text, kind, done=done, refused=result.refused)


def undo_last(db: Database, actor: str) -> ActionOutcome:
    """Undo this reviewer's newest action (all of it, for a batch), unless someone acted on
    the clip since or the archive job already deleted its files (then say so)."""
    latest = queries.latest_undoable_event(db, actor)
    if latest is None:
        return ActionOutcome(False, "Nothing to undo.", "invalid")
    event_id, clip_ids = latest
    batch = queries.event_batch(db, event_id)
    if batch is not None:
        return _undo_batch(db, actor, batch, event_id)
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
    back = "skipped again" if newest_action == "reopen" else "back in the queue"
    return ActionOutcome(True, f"Undone: the clip is {back}.", event_id=eid, clip_id=clip_id)


def _undo_batch(db: Database, actor: str, batch: int, event_id: int) -> ActionOutcome:
    try:
        clip_ids = states.undo_batch(db, actor, batch, event_id)
    except InvalidTransitionError as exc:
        why = f"clip {exc.entity_id}: {_undo_reason(exc)}" if exc.entity_id else _undo_reason(exc)
        return ActionOutcome(False, "Cannot undo the batch: " + why, "invalid")
    except states.StaleActionError as exc:
        return ActionOutcome(False, f"Cannot undo the batch: {exc}.", "stale")
    except HeatersStateError as exc:
        return _refused(exc, 0)
    n = len(clip_ids)
    return ActionOutcome(True, f"Undone: {n} clip{'s are' if n != 1 else ' is'} back in the queue.")


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
