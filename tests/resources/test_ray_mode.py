"""Ray mode without a cluster: the instance configuration, what runs ask Ray for, the refusal
without shared state, and local files uploaded at submission. The cluster itself is exercised
by tests/ray/test_multi_host.py (simulated hosts)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from heaters_media.samples import SAMPLE_VIDEO
from heaters_resources.cli.platform import register
from heaters_resources.db.engine import Database
from heaters_resources.errors import ConfigError
from heaters_resources.orchestration import names, ray_mode
from heaters_resources.orchestration.instance import REPO_ROOT, prepare_dagster_home
from heaters_resources.settings import Settings
from heaters_resources.store.objects import S3ObjectStore


def _settings(**env: str) -> Settings:
    base = {
        "HEATERS_RAY_ADDRESS": "http://head:8265",
        "HEATERS_DATABASE_URL": "postgresql://db/heaters",
        "HEATERS_S3_BUCKET": "lib",
    }
    return Settings.from_env({**base, **env})


def test_instance_config_launches_runs_on_ray() -> None:
    config = ray_mode.instance_config(
        _settings(HEATERS_RAY_CPUS_PER_RUN="2"), REPO_ROOT / "dagster.yaml"
    )
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == (
        "heaters_resources.orchestration.ray_launcher",
        "HeatersRayRunLauncher",
    )
    ray = launcher["config"]["ray"]
    assert ray["address"] == "http://head:8265" and ray["num_cpus"] == 2.0
    assert "HEATERS_DATABASE_URL" in ray["env_vars"] and "AWS_SECRET_ACCESS_KEY" in ray["env_vars"]
    assert all("=" not in name for name in ray["env_vars"])  # names only: no secret in a file
    assert (
        config["run_monitoring"]["enabled"]
        and config["run_monitoring"]["max_resume_run_attempts"] == 0
    )
    # the rest of the repository's file is kept (queue limits, retries)
    base = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert config["run_coordinator"] == base["run_coordinator"]
    assert config["run_retries"] == base["run_retries"]


@pytest.mark.parametrize("missing", ["HEATERS_DATABASE_URL", "HEATERS_S3_BUCKET"])
def test_ray_mode_needs_shared_state(missing: str) -> None:
    with pytest.raises(ConfigError, match=missing):
        ray_mode.instance_config(_settings(**{missing: ""}), REPO_ROOT / "dagster.yaml")


def test_runs_ask_for_what_their_work_needs() -> None:
    cpu, gpu = _settings(), _settings(HEATERS_EMBED_DEVICE="cuda")
    embed: tuple[str, list[str]] = (names.EMBED_CLIPS_JOB, [])
    backfill = ("__ASSET_JOB", [names.CLIP_EMBEDDING_ASSET])
    media = ("__ASSET_JOB", [names.CLIP_SPLITS_ASSET])
    assert ray_mode.run_resources(*embed, gpu) == {"num_cpus": 1.0, "num_gpus": 1}
    assert ray_mode.run_resources(*backfill, gpu) == {"num_cpus": 1.0, "num_gpus": 1}
    assert ray_mode.run_resources(*media, gpu) == {"num_cpus": 1.0}
    assert ray_mode.run_resources(*embed, cpu) == {"num_cpus": 1.0}


def test_launcher_tags_each_run_with_what_it_asks_ray_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our subclass adds the resources tag; dagster-ray's own parser reads it back."""
    pytest.importorskip("dagster_ray", reason="the ray extra")
    from dagster_ray import RayRunLauncher
    from dagster_ray.core.run_launcher import RayLauncherConfig

    from heaters_resources.orchestration.ray_launcher import HeatersRayRunLauncher

    seen: list[dg.DagsterRun] = []
    # dagster-ray's submission itself needs a cluster (tests/ray): here only what reaches it
    monkeypatch.setattr(
        RayRunLauncher, "_launch_ray_job", lambda self, sid, ep, run: seen.append(run)
    )
    monkeypatch.setenv("HEATERS_EMBED_DEVICE", "cuda")
    launcher = HeatersRayRunLauncher(address="http://head:8265", num_cpus=1)
    embedding = {dg.AssetKey(names.CLIP_EMBEDDING_ASSET)}
    own = {ray_mode.RAY_CONFIG_TAG: json.dumps({"num_cpus": 4})}
    for selection, tags in (
        (embedding, {}),
        ({dg.AssetKey(names.CLIP_SPLITS_ASSET)}, {}),
        (embedding, own),
    ):
        run = dg.DagsterRun(
            job_name="__ASSET_JOB", run_id="r", asset_selection=selection, tags=tags
        )
        launcher._launch_ray_job("sid", "true", run)
    parsed = [RayLauncherConfig.from_tags(run.tags) for run in seen]
    assert [(c.num_cpus, c.num_gpus) for c in parsed] == [(1.0, 1), (1.0, None), (4, None)]


def test_dagster_home_gets_the_ray_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_database_url: str
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = _settings(HEATERS_HOME=str(tmp_path), HEATERS_DATABASE_URL=fresh_database_url)
    env = prepare_dagster_home(settings)
    written = yaml.safe_load((Path(env["DAGSTER_HOME"]) / "dagster.yaml").read_text())
    assert written["run_launcher"]["class"] == "HeatersRayRunLauncher"
    plain = prepare_dagster_home(
        Settings.from_env(
            {"HEATERS_HOME": str(tmp_path / "plain"), "HEATERS_DATABASE_URL": fresh_database_url}
        )
    )
    assert "run_launcher" not in yaml.safe_load(
        (Path(plain["DAGSTER_HOME"]) / "dagster.yaml").read_text()
    )


def test_submit_uploads_local_files_in_ray_mode(
    db: Database, s3_store: S3ObjectStore, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "HEATERS_RAY_ADDRESS": "http://head:8265",
        "HEATERS_S3_BUCKET": s3_store.bucket,
        "HEATERS_S3_PREFIX": "lib",
        "HEATERS_S3_ENDPOINT_URL": s3_endpoint,
        "HEATERS_S3_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    vid, created = register(db, str(SAMPLE_VIDEO), new=False)
    again, created_again = register(db, str(SAMPLE_VIDEO), new=False)
    from heaters_resources import states

    source = states.get_source_video(db, vid).source
    assert created and source.startswith("store:uploads/") and source.endswith(SAMPLE_VIDEO.name)
    key = source.removeprefix("store:")
    assert s3_store.read_bytes(key) == SAMPLE_VIDEO.read_bytes()
    assert (again, created_again) == (vid, False)  # same content: the same video
