"""Sensors that move work along: submissions -> video runs, new clips -> clip runs,
review actions -> review jobs. Cursors are row ids; run keys make every request idempotent."""

from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import select

from heaters_assets.jobs import (
    REVIEW_JOB_ACTIONS,
    clip_artifacts_job,
    ingest_video_job,
    review_action_job,
)
from heaters_assets.partitions import SOURCE_VIDEOS, VIDEOS_PER_MEDIA_RUN
from heaters_assets.sensors.requests import video_runs
from heaters_resources.db.models import Clip, ReviewEvent, SourceVideo
from heaters_resources.orchestration import names
from heaters_resources.orchestration.resources import DatabaseResource, SettingsResource

BATCH = 500


def _cursor(context: dg.SensorEvaluationContext) -> int:
    return int(context.cursor) if context.cursor else 0


@dg.sensor(
    job=ingest_video_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Submitted videos (heaters submit, inbox) -> one ingest run per video.",
)
def submissions_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    with database.get_database().session() as session:
        ids = list(
            session.scalars(
                select(SourceVideo.id)
                .where(SourceVideo.id > _cursor(context), SourceVideo.state == "new")
                .order_by(SourceVideo.id)
                .limit(BATCH)
            )
        )
    if not ids:
        return dg.SensorResult(skip_reason="no new submissions")
    keys = [str(i) for i in ids]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"video-{k}", partition_key=k) for k in keys],
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(partitions_def_name=SOURCE_VIDEOS, partition_keys=keys)
        ],
        cursor=str(ids[-1]),
    )


@dg.sensor(
    job=clip_artifacts_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New clips (splits, merges) -> keyframes + sprite runs over their videos.",
)
def new_clips_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    with database.get_database().session() as session:
        rows = session.execute(
            select(Clip.id, Clip.identifier, Clip.source_video_id)
            .where(Clip.id > _cursor(context), Clip.state == "spliced")
            .order_by(Clip.id)
            .limit(BATCH)
        ).all()
    if not rows:
        return dg.SensorResult(skip_reason="no new clips")
    # One run covers the new clips of up to VIDEOS_PER_MEDIA_RUN videos (their partitions);
    # the run key names the newest clip, so later clips of the same video get their own run.
    requests, adds = video_runs(
        context, {vid for _, _, vid in rows}, f"clips-{rows[-1][0]}", VIDEOS_PER_MEDIA_RUN
    )
    return dg.SensorResult(
        run_requests=requests, dynamic_partitions_requests=adds, cursor=str(rows[-1][0])
    )


@dg.sensor(
    job=review_action_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Review actions -> merge / split / archive-purge runs. Archive purges wait "
    "HEATERS_ARCHIVE_GRACE_SECONDS so that an undo can still come first.",
)
def review_actions_sensor(
    context: dg.SensorEvaluationContext, settings: SettingsResource, database: DatabaseResource
) -> dg.SensorResult:
    grace = timedelta(seconds=settings.get_settings().archive_grace_seconds)
    with database.get_database().session() as session:
        events = session.execute(
            select(ReviewEvent.id, ReviewEvent.action, ReviewEvent.created_at)
            .where(ReviewEvent.id > _cursor(context))
            .order_by(ReviewEvent.id)
            .limit(BATCH)
        ).all()
        undone = set(
            session.scalars(
                select(ReviewEvent.undoes_event_id).where(
                    ReviewEvent.undoes_event_id.in_([e.id for e in events])
                )
            )
        )
    cursor, requests = _cursor(context), []
    now = datetime.now(UTC)
    for event_id, action, created in events:
        if action == "archive" and created > now - grace:
            break  # not yet: keep the cursor here and look again later
        if action in REVIEW_JOB_ACTIONS and event_id not in undone:
            requests.append(
                dg.RunRequest(
                    run_key=f"review-{event_id}",
                    run_config={
                        "ops": {"carry_out_review_action": {"config": {"event_id": event_id}}}
                    },
                    tags={names.REVIEW_EVENT_TAG: str(event_id), names.REVIEW_ACTION_TAG: action},
                )
            )
        cursor = event_id
    if not requests and cursor == _cursor(context):
        return dg.SensorResult(skip_reason="no review actions to carry out")
    return dg.SensorResult(run_requests=requests, cursor=str(cursor))
