"""Jobs: asset jobs the sensors launch, and the op job that carries out review actions."""

from typing import Any

import dagster as dg

from heaters_assets.assets.clips import clip_artifacts
from heaters_assets.assets.videos import clip_splits, source_video
from heaters_resources import steps
from heaters_resources.db.models import ReviewEvent
from heaters_resources.orchestration import names
from heaters_resources.orchestration.resources import DatabaseResource, ObjectStoreResource
from heaters_resources.states import leases

ingest_video_job = dg.define_asset_job(
    names.INGEST_VIDEO_JOB,
    selection=[source_video, clip_splits],
    description="Ingest one video and cut it into clips (one run per video partition).",
)

video_job = dg.define_asset_job(
    names.VIDEO_JOB,
    selection=[source_video, clip_splits, clip_artifacts],
    description="One video from download to review-ready clips (keyframes, sprites) in one run: "
    "what `heaters demo` runs. Sensors launch the two halves separately.",
)

clip_artifacts_job = dg.define_asset_job(
    names.CLIP_ARTIFACTS_JOB,
    selection=[clip_artifacts],
    description="Keyframes and sprite sheets for one or a range of video partitions in one run.",
)

REVIEW_JOB_ACTIONS = ("request_merge", "request_split", "archive")


class ReviewActionConfig(dg.Config):
    event_id: int


@dg.op(tags=names.MEDIA_TAGS)
def carry_out_review_action(
    context: dg.OpExecutionContext,
    config: ReviewActionConfig,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
) -> dg.Output[None]:
    """Merge, split, or purge an archived clip's files, as recorded by a review event."""
    db, store = database.get_database(), object_store.get_store()
    with db.session() as session:
        event = session.get(ReviewEvent, config.event_id)
        if event is None:
            raise dg.Failure(f"review event {config.event_id} not found")
        action, clip_ids, payload = event.action, list(event.clip_ids), dict(event.payload)
    context.log.info(f"review event {config.event_id}: {action} {clip_ids}")
    metadata: dict[str, Any] = {"action": action, "clips": dg.MetadataValue.json(clip_ids)}
    if action == "request_merge":
        with leases.holding(db, context.run.run_id):
            out = steps.execute_merge(db, store, clip_ids)
    elif action == "request_split":
        with leases.holding(db, context.run.run_id):
            out = steps.execute_split(db, store, clip_ids[0], int(payload["frame"]))
    elif action == "archive":
        purged = steps.purge_archived_clips(db, store, clip_ids, event_id=config.event_id)
        metadata.update(
            purged=len(purged.clip_ids),
            objects_deleted=purged.deleted,
            delete_requests=purged.requests,
            failures=dg.MetadataValue.json(purged.failed),
        )
        if purged.failed:
            raise dg.Failure(
                f"could not delete {len(purged.failed)} objects",
                metadata={"failed": dg.MetadataValue.json(purged.failed)},
            )
        return dg.Output(None, metadata=metadata)
    else:
        raise dg.Failure(f"review action {action!r} needs no job")
    if out.skipped:  # undone before or during the job: nothing to do, nothing to retry
        context.log.info(f"review event {config.event_id} skipped: {out.skipped}")
        metadata.update(skipped=out.skipped)
        return dg.Output(None, metadata=metadata)
    # New clips start at `spliced`; the new-clips sensor starts their video's artifact run.
    metadata.update(new_clips=dg.MetadataValue.json(out.new_identifiers))
    return dg.Output(None, metadata=metadata)


@dg.job(
    description="Carry out one review action (merge, split, archive purge).",
    name=names.REVIEW_ACTION_JOB,
    tags=names.MEDIA_TAGS,
)
def review_action_job() -> None:
    carry_out_review_action()
