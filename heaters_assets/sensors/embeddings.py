"""Sensors that launch ``embed_clips_job``: newly approved clips (on by default) and the
"embed only missing" backfill for the configured (model, strategy) (off by default).

Both request runs over ranges of the video partitions that hold the wanted clips, at most
VIDEOS_PER_EMBEDDING_RUN videos per run, so a model is loaded once per run; the run embeds
only the clips that need it (the step skips the others).
"""

import dagster as dg
from sqlalchemy import select

from heaters_assets.assets.embeddings import embed_clips_job
from heaters_assets.partitions import VIDEOS_PER_EMBEDDING_RUN
from heaters_assets.sensors.requests import video_runs
from heaters_resources.db.models import Clip, ReviewEvent
from heaters_resources.orchestration.resources import DatabaseResource
from heaters_resources.search import space
from heaters_resources.steps import embeddings

BATCH = 500


@dg.sensor(
    job=embed_clips_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Approved clips (review events 'approve') -> embedding runs with the "
    "default model (HEATERS_EMBEDDING_MODEL / _STRATEGY).",
)
def approved_clips_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    cursor = int(context.cursor) if context.cursor else 0
    with database.get_database().session() as session:
        events = session.execute(
            select(ReviewEvent.id, ReviewEvent.clip_ids)
            .where(ReviewEvent.id > cursor, ReviewEvent.action == "approve")
            .order_by(ReviewEvent.id)
            .limit(BATCH)
        ).all()
        ids = [cid for _, clip_ids in events for cid in clip_ids]
        # Only clips still approved (an undo may have come first).
        videos = (
            set(
                session.scalars(
                    select(Clip.source_video_id).where(Clip.id.in_(ids), Clip.state == "approved")
                )
            )
            if ids
            else set()
        )
    if not events:
        return dg.SensorResult(skip_reason="no new approvals")
    last = events[-1][0]
    if not videos:
        return dg.SensorResult(skip_reason="approved clips moved on", cursor=str(last))
    requests, adds = video_runs(context, videos, f"approved-{last}", VIDEOS_PER_EMBEDDING_RUN)
    return dg.SensorResult(
        run_requests=requests, dynamic_partitions_requests=adds, cursor=str(last)
    )


@dg.sensor(
    job=embed_clips_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Backfill: clips (approved/embedded) missing the configured model and "
    "strategy -> embedding runs over only those clips. Turn on after "
    "changing HEATERS_EMBEDDING_MODEL; `heaters embed-missing` does the same "
    "once.",
)
def missing_embeddings_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    model, strategy = space.default_model(), space.default_strategy()
    missing = embeddings.clips_missing_embedding(database.get_database(), model, strategy, limit=1)
    if not missing:
        return dg.SensorResult(skip_reason=f"no clips missing {model}/{strategy}")
    # Run keys name the model and the range: a range is requested once per model (a failed
    # clip is not retried in a loop; re-run it from the UI or `heaters embed-missing`).
    videos = embeddings.videos_missing_embedding(database.get_database(), model, strategy)
    requests, adds = video_runs(
        context, videos, f"missing-{model}-{strategy}", VIDEOS_PER_EMBEDDING_RUN
    )
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=adds)
