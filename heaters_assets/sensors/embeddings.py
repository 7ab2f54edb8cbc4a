"""Sensors that launch ``embed_clips_job``: newly approved clips (on by default) and the
"embed only missing" backfill for the configured (model, strategy) (off by default).

Both request runs over partition ranges that contain only the wanted clips (in the instance's
partition order), at most EMBED_CLIPS_PER_RUN clips per run, so a model is loaded once per run.
"""

from collections.abc import Sequence

import dagster as dg
from sqlalchemy import select

from heaters_assets.assets.embeddings import embed_clips_job
from heaters_assets.partitions import CLIPS, partition_range_tags
from heaters_resources.db.models import Clip, ReviewEvent
from heaters_resources.orchestration.resources import DatabaseResource
from heaters_resources.search import space
from heaters_resources.steps import embeddings

BATCH = 500


def _requests(
    context: dg.SensorEvaluationContext,
    identifiers: Sequence[str],
    key: str,
) -> tuple[list[dg.RunRequest], list[dg.AddDynamicPartitionsRequest]]:
    """Run requests over ranges of ``identifiers``; unknown partitions are added (at the end)."""
    order = list(context.instance.get_dynamic_partitions(CLIPS))
    known = set(order)
    new = [i for i in identifiers if i not in known]
    ranges = embeddings.partition_ranges(identifiers, order + new)
    requests = [
        dg.RunRequest(run_key=f"{key}-{first}-{last}", tags=partition_range_tags(first, last))
        for first, last in ranges
    ]
    adds = [dg.AddDynamicPartitionsRequest(partitions_def_name=CLIPS, partition_keys=new)]
    return requests, adds if new else []


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
        # Only clips still approved (an undo may have come first), in creation order.
        idents = (
            list(
                session.scalars(
                    select(Clip.identifier)
                    .where(Clip.id.in_(ids), Clip.state == "approved")
                    .order_by(Clip.id)
                )
            )
            if ids
            else []
        )
    if not events:
        return dg.SensorResult(skip_reason="no new approvals")
    last = events[-1][0]
    if not idents:
        return dg.SensorResult(skip_reason="approved clips moved on", cursor=str(last))
    requests, adds = _requests(context, idents, f"approved-{last}")
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
    missing = embeddings.clips_missing_embedding(
        database.get_database(), model, strategy, limit=BATCH * 10
    )
    if not missing:
        return dg.SensorResult(skip_reason=f"no clips missing {model}/{strategy}")
    # Run keys name the model and the range: a range is requested once per model (a failed
    # clip is not retried in a loop; re-run it from the UI or `heaters embed-missing`).
    requests, adds = _requests(context, [i for _, i in missing], f"missing-{model}-{strategy}")
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=adds)
