"""The run launcher of Ray mode: dagster-ray's RayRunLauncher, with resources chosen per run.

Why a subclass: dagster-ray takes a run's Ray resources from a ``dagster-ray/config`` run tag,
but runs of asset backfills and sensors carry no job tags of ours. Here every run that does not
name its own resources gets them from what it materializes
(:func:`heaters_resources.orchestration.ray_mode.run_resources`): CPUs for media runs, plus a
GPU for embedding runs when ``HEATERS_EMBED_DEVICE`` is ``cuda``. Everything else (submission
as a Ray job, health checks the run monitor uses, termination) is dagster-ray's. Loaded by
Dagster only when dagster.yaml names it (Ray mode; the ``ray`` extra).
"""

from __future__ import annotations

from typing import Any

from dagster._core.storage.dagster_run import DagsterRun
from dagster_ray import RayRunLauncher

from heaters_resources.orchestration.ray_mode import RAY_CONFIG_TAG, resource_tag
from heaters_resources.settings import Settings


def run_asset_keys(run: DagsterRun) -> list[str]:
    """The run's assets as plain names (``clip_embedding``), or [] for an op job."""
    return ["/".join(key.path) for key in (run.asset_selection or ())]


class HeatersRayRunLauncher(RayRunLauncher):
    """RayRunLauncher whose runs ask Ray for what their work needs (see the module docstring)."""

    def _launch_ray_job(self, submission_id: str, entrypoint: str, run: DagsterRun) -> Any:
        if RAY_CONFIG_TAG not in run.tags:
            tag = resource_tag(run.job_name, run_asset_keys(run), Settings.from_env())
            run = run.with_tags({**run.tags, **tag})
        return super()._launch_ray_job(submission_id, entrypoint, run)
