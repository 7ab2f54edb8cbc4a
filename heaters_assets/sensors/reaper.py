"""The reaper: rows held by dead workers go back to a retryable state, Dagster runs whose
workers died are reported failed (so run retries start them again), and scratch folders of
killed steps are removed (`heaters_resources.states.leases`).

Steps already reap the rows they touch when they start; this sensor is for the rows nobody
touches again on their own (a video whose run was killed and that no one re-materializes), and
for Dagster: the default run launcher cannot tell that a run's process died, so without this a
killed run would stay STARTED for ever.

``lost_launches_sensor`` covers the other gap, in Ray mode: Dagster asks a run launcher about
a run's worker only once the run is STARTED. A run handed to Ray whose job died before it began
(its node died while the job waited there for a CPU: seen in the multi-host test) would stay
STARTING until ``start_timeout_seconds`` (5 minutes); this asks the launcher every 15 s.
"""

import dagster as dg
from dagster._core.launcher import WorkerStatus

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


def fail_lost_launches(instance: dg.DagsterInstance) -> int:
    """STARTING runs whose launcher says their worker is gone: reported failed (then retried)."""
    launcher = instance.run_launcher
    if not launcher.supports_check_run_worker_health:
        return 0  # the default launcher: its runs start on this machine or fail at once
    failed = 0
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING])):
        health = launcher.check_run_worker_health(run)
        if health.status == WorkerStatus.FAILED:
            instance.report_run_failed(run, f"run worker lost before it started: {health.msg}")
            failed += 1
    return failed


@dg.sensor(
    minimum_interval_seconds=15,
    description="Runs launched but not started whose worker is gone (Ray: the job's node "
    "died) -> FAILURE (then retried), instead of waiting out the start timeout.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def lost_launches_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    failed = fail_lost_launches(context.instance)
    if failed:
        context.log.info(f"failed {failed} run(s) whose worker was lost before it started")
    return dg.SkipReason(f"{failed} lost launches")
