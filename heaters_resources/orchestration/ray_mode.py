"""Runs on a Ray cluster: the instance configuration and what each run asks Ray for.

Why: one machine is the embedded default; a library that outgrows it needs runs placed on many
machines, and the video-curation field schedules on Ray. With ``HEATERS_RAY_ADDRESS`` set (a
Ray cluster's job-submission address, ``http://head:8265``), ``prepare_dagster_home`` writes a
``dagster.yaml`` whose run launcher is :class:`~heaters_resources.orchestration.ray_launcher.
HeatersRayRunLauncher` (``dagster-ray``'s RayRunLauncher): the daemon submits every run as a
Ray job, Ray places it on a node with the CPUs (and, for embedding runs with
``HEATERS_EMBED_DEVICE=cuda``, the GPU) it asks for, and the run's process there talks to the
same Postgres and S3 as everything else.

Shared state is the precondition: a run may land on any node, so the database and the object
store must be reachable over the network (``HEATERS_DATABASE_URL``, ``HEATERS_S3_BUCKET``),
and a local file given to ``heaters submit`` is uploaded to the store first. A node's disk
holds only scratch space. The variables in :data:`FORWARDED_ENV` go with every run (names in
the YAML, values read from the daemon's environment when it launches the run, so no secret is
written to a file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from heaters_resources.errors import ConfigError
from heaters_resources.orchestration import names
from heaters_resources.settings import Settings

#: The run tag dagster-ray reads a run's own Ray resources from (JSON).
RAY_CONFIG_TAG = "dagster-ray/config"
LAUNCHER_MODULE = "heaters_resources.orchestration.ray_launcher"
LAUNCHER_CLASS = "HeatersRayRunLauncher"
#: What a run needs wherever it lands: shared state, model and step settings, credentials.
FORWARDED_ENV = (
    "HEATERS_DATABASE_URL",
    "HEATERS_DAGSTER_PG_URL",
    "HEATERS_S3_BUCKET",
    "HEATERS_S3_PREFIX",
    "HEATERS_S3_ENDPOINT_URL",
    "HEATERS_S3_REGION",
    "HEATERS_EMBEDDING_MODEL",
    "HEATERS_EMBEDDING_STRATEGY",
    "HEATERS_EMBED_DEVICE",
    "HEATERS_LEASE_SECONDS",
    "HEATERS_CLIPS",
    "HEATERS_MAX_DOWNLOAD_BYTES",
    "HEATERS_DOWNLOAD_TIMEOUT_SECONDS",
    "HEATERS_DOWNLOAD_STALL_SECONDS",
    "HEATERS_RAY_ADDRESS",
    "HEATERS_FAULT_POINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "HF_HOME",
    "HF_HUB_OFFLINE",
)
#: How often the daemon asks Ray whether a run's job is still alive (dagster.yaml's default
#: of 60 s is for runs on this machine, where the reaper sensor also watches the processes).
RAY_MONITOR_SECONDS = 15


def check_shared_state(settings: Settings) -> None:
    """Ray mode needs state every node reaches: a database URL and an S3 bucket."""
    missing = [
        name
        for name, value in (
            ("HEATERS_DATABASE_URL", settings.database_url),
            ("HEATERS_S3_BUCKET", settings.s3_bucket),
        )
        if not value
    ]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"HEATERS_RAY_ADDRESS is set but {' and '.join(missing)} {verb} "
            "not: runs on a Ray cluster land on any node, so the database and the object store "
            "must be reachable over the network (the embedded Postgres and the local folder "
            "live on this machine only)"
        )


def launcher_section(settings: Settings) -> dict[str, Any]:
    """The ``run_launcher`` section of dagster.yaml for ``settings.ray_address``."""
    return {
        "module": LAUNCHER_MODULE,
        "class": LAUNCHER_CLASS,
        "config": {
            "ray": {
                "address": settings.ray_address,
                "num_cpus": settings.ray_cpus_per_run,
                "env_vars": list(FORWARDED_ENV),
            }
        },
    }


def instance_config(settings: Settings, base: Path) -> dict[str, Any]:
    """The repository's dagster.yaml (``base``) with the Ray run launcher, for Ray mode."""
    check_shared_state(settings)
    config: dict[str, Any] = yaml.safe_load(base.read_text())
    config["run_launcher"] = launcher_section(settings)
    monitoring = config.setdefault("run_monitoring", {})
    monitoring.update(enabled=True, poll_interval_seconds=RAY_MONITOR_SECONDS)
    # A run whose node died is failed by the monitor (its Ray job ended) and retried whole by
    # run_retries on another node; resuming in place would re-enter steps without a lease.
    monitoring["max_resume_run_attempts"] = 0
    # Compute logs stay on the node that ran the step: not kept (Dagster's event log, in
    # Postgres, has every step's events and our own log lines).
    config["compute_logs"] = {
        "module": "dagster.core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    }
    return config


def write_instance_yaml(settings: Settings, base: Path, target: Path) -> None:
    target.write_text(
        "# Written by heaters (Ray mode: HEATERS_RAY_ADDRESS is set); edits are overwritten.\n"
        + yaml.safe_dump(instance_config(settings, base), sort_keys=False)
    )


def is_embedding_run(job_name: str, asset_keys: list[str]) -> bool:
    return job_name == names.EMBED_CLIPS_JOB or names.CLIP_EMBEDDING_ASSET in asset_keys


def run_resources(job_name: str, asset_keys: list[str], settings: Settings) -> dict[str, Any]:
    """What a run asks Ray for: CPUs always; a GPU for embedding runs meant for CUDA."""
    ask: dict[str, Any] = {"num_cpus": settings.ray_cpus_per_run}
    if is_embedding_run(job_name, asset_keys) and settings.embed_device.startswith("cuda"):
        ask["num_gpus"] = 1
    return ask


def resource_tag(job_name: str, asset_keys: list[str], settings: Settings) -> dict[str, str]:
    return {RAY_CONFIG_TAG: json.dumps(run_resources(job_name, asset_keys, settings))}
