"""The reaper: rows held by dead workers go back to a retryable state, Dagster runs whose
workers died are reported failed (so run retries start them again), and scratch folders of
killed steps are removed (`heaters_resources.states.leases`).

Steps already reap the rows they touch when they start; this sensor is for the rows nobody
touches again on their own (a video whose run was killed and that no one re-materializes), and
for Dagster: the default run launcher cannot tell that a run's process died, so without this a
killed run would stay STARTED for ever.
"""

import dagster as dg

from heaters_resources.db.engine import Database
from heaters_resources.orchestration.resources import DatabaseResource
from heaters_resources.states import leases
from heaters_resources.steps.common import sweep_stale_scratch


def run_status_of(instance: dg.DagsterInstance) -> leases.RunStatus:
    def status(run_id: str) -> str | None:
        try:
            run = instance.get_run_by_id(run_id)
        except Exception:
            return None
        return None if run is None else run.status.value

    return status


def reap_once(instance: dg.DagsterInstance, db: Database) -> dict[str, int]:
    """One pass: fail dead runs first (their leases name them), then reap rows and leases."""
    status = run_status_of(instance)
    failed_runs = 0
    for run_id, reason in leases.dead_runs(db, status).items():
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status == dg.DagsterRunStatus.STARTED:
            instance.report_run_failed(run, f"run worker died: {reason}")
            failed_runs += 1
    reaped = leases.reap(db, run_status=status)
    swept = sweep_stale_scratch(None)
    return {"rows": len(reaped), "runs": failed_runs, "scratch": len(swept)}


@dg.sensor(
    minimum_interval_seconds=60,
    description="Rows held by dead workers -> failed state (reason 'interrupted'); dead runs "
    "-> FAILURE (then retried); scratch folders of killed steps removed.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def reaper_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SkipReason:
    counts = reap_once(context.instance, database.get_database())
    if any(counts.values()):
        context.log.info(
            f"interrupted {counts['rows']} row(s), failed {counts['runs']} dead run(s), "
            f"removed {counts['scratch']} stale scratch folder(s)"
        )
    return dg.SkipReason(
        f"reaped {counts['rows']} rows, {counts['runs']} runs, {counts['scratch']} scratch folders"
    )
