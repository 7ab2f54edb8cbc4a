"""The Dagster ``Definitions`` that ``workspace.yaml`` loads: every asset, job, sensor and
resource of Heaters, wired in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from heaters_assets.assets.clips import clip_artifacts
from heaters_assets.assets.embeddings import clip_embedding, embed_clips_job
from heaters_assets.assets.videos import clip_splits, source_video
from heaters_assets.jobs import (
    clip_artifacts_job,
    ingest_video_job,
    review_action_job,
    video_job,
)
from heaters_assets.sensors.embeddings import approved_clips_sensor, missing_embeddings_sensor
from heaters_assets.sensors.inbox import inbox_sensor, store_inbox_sensor
from heaters_assets.sensors.pipeline import (
    new_clips_sensor,
    review_actions_sensor,
    submissions_sensor,
)
from heaters_assets.sensors.reaper import lost_launches_sensor, reaper_sensor
from heaters_resources.orchestration.resources import (
    DatabaseResource,
    ObjectStoreResource,
    SettingsResource,
)

ASSETS = [source_video, clip_splits, clip_artifacts, clip_embedding]
JOBS: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = [
    ingest_video_job,
    clip_artifacts_job,
    video_job,
    review_action_job,
    embed_clips_job,
]
SENSORS = [
    inbox_sensor,
    store_inbox_sensor,
    submissions_sensor,
    new_clips_sensor,
    review_actions_sensor,
    approved_clips_sensor,
    missing_embeddings_sensor,
    reaper_sensor,
    lost_launches_sensor,
]


def default_resources() -> dict[str, Any]:
    """Resources configured from the environment (HEATERS_HOME, HEATERS_DATABASE_URL, S3...)."""
    return {
        "database": DatabaseResource(),
        "object_store": ObjectStoreResource(),
        "settings": SettingsResource(),
    }


def build_definitions(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The whole platform; tests pass resources pointing at their own database and store."""
    # Steps of our jobs run one after the other (ingest -> splice, keyframes -> sprites), so a
    # process per step (the multiprocess default) would only add start-up time. Runs still run
    # in parallel; scale-out swaps the run launcher/executor in dagster.yaml (see README).
    return dg.Definitions(
        assets=ASSETS,
        jobs=JOBS,
        sensors=SENSORS,
        resources=dict(resources or default_resources()),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
