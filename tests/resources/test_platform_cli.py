"""The platform through its command lines: `heaters demo` (dagster job execute), `dagster asset
materialize`, `heaters submit/status`, and `heaters dev` (webserver + daemon) picking a video up
from the inbox. Each test gets its own HEATERS_HOME, embedded Postgres and DAGSTER_HOME."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from heaters_media.samples import SAMPLE_CUTS, SAMPLE_VIDEO
from heaters_resources.db.embedded_pg import ensure_server, stop_server
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact
from tests.dagster_graphql import LAUNCH_BACKFILL, graphql

BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    yield home
    stop_server(home)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))}
    env.update(HEATERS_HOME=str(home), **extra)
    return env


def _db(home: Path) -> Database:
    return Database(ensure_server(home).url)


def test_demo_and_asset_materialize(home: Path) -> None:
    """`heaters demo --clips exact`: every clip's file is cut in the run (the default, proxy,
    is the next test's)."""
    proc = subprocess.run(
        [str(BIN / "heaters"), "demo", "--clips", "exact"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["clips"] == len(SAMPLE_CUTS) + 1
    assert "pending_review" in proc.stderr  # the summary table
    # one run for the whole video, named with its time; the log and the UI link said
    assert len(out["runs"]) == 1 and all(out["runs"]), out
    said = " ".join(proc.stderr.split())  # rich wraps long lines at the terminal's width
    for run_id in out["runs"]:
        assert f"(run {run_id})" in said
    assert "Dagster log:" in said and f"/runs/{out['runs'][-1]}" in said
    db = _db(home)
    with db.session() as s:
        clips = list(s.scalars(select(Clip).order_by(Clip.start_frame)))
        artifacts_before = s.scalar(select(func.count()).select_from(ClipArtifact))
    assert [c.start_frame for c in clips[1:]] == SAMPLE_CUTS
    assert all((home / "objects" / c.storage_key).is_file() for c in clips)

    # Re-run the video's clip assets with overwrite through `dagster asset materialize` (its
    # partition is the video): replaced, not duplicated, and every clip is back in review.
    config = {
        "ops": {
            "clip_artifacts": {"config": {"overwrite": True, "strategy": "multi"}},
        }
    }
    proc = _materialize(home, "keyframes,sprite_sheet", clips[2].source_video_id, config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ClipArtifact)) == artifacts_before
        assert {s.get(Clip, c.id).state for c in clips} == {"pending_review"}
    db.dispose()


def _materialize(
    home: Path, select_: str, partition: int, config: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """`dagster asset materialize` of ``select_`` for one video partition of ``home``."""
    from heaters_resources.orchestration.instance import prepare_dagster_home
    from heaters_resources.settings import Settings

    env = prepare_dagster_home(Settings.from_env(_env(home)))
    return subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "heaters_assets.definitions",
            "--select",
            select_,
            "--partition",
            str(partition),
            *(["--config-json", json.dumps(config)] if config else []),
        ],
        env={
            **env,
            **_env(
                home,
                DAGSTER_HOME=env["DAGSTER_HOME"],
                HEATERS_DAGSTER_PG_URL=env["HEATERS_DAGSTER_PG_URL"],
            ),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_with_review_proxies_cuts_clips_when_approved(home: Path) -> None:
    """`heaters demo` (HEATERS_CLIPS=proxy, the default): the run cuts no clip file and stores
    a review proxy of each clip; approving one and materializing its video's
    `clip_embedding` cuts its file."""
    bad = subprocess.run(
        [str(BIN / "heaters"), "demo", "--clips", "lazy"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--clips" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.run(
        [str(BIN / "heaters"), "demo"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "review proxies" in " ".join(proc.stderr.split())
    db = _db(home)
    with db.session() as s:
        clips = list(s.scalars(select(Clip).order_by(Clip.start_frame)))
        proxies = s.scalar(
            select(func.count()).select_from(ClipArtifact).where(ClipArtifact.kind == "proxy")
        )
    assert [c.start_frame for c in clips[1:]] == SAMPLE_CUTS
    assert all(c.storage_key is None and c.state == "pending_review" for c in clips)
    assert proxies == len(clips)
    from heaters_resources import states

    states.approve_clip(db, clips[1].id)
    proc = _materialize(home, "clip_embedding", clips[1].source_video_id)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with db.session() as s:
        cut = s.get(Clip, clips[1].id)
        assert cut is not None and cut.state == "embedded" and cut.storage_key
        assert (home / "objects" / cut.storage_key).is_file()
        assert s.get(Clip, clips[2].id).storage_key is None  # not approved: not cut
    db.dispose()


def test_warm_dagster_cli_runs_its_command_in_the_environment_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`heaters demo` starts the Dagster CLI before it knows the command (WarmDagster): the
    command runs in the environment given then (DAGSTER_HOME here, unknown at start), a
    failure raises RunFailedError with the log, and an unused one ends without running. The
    storage modules it imports ahead are the ones dagster.yaml names; one that cannot be
    imported costs the head start only."""
    import importlib

    from heaters_resources.errors import RunFailedError
    from heaters_resources.orchestration.instance import WarmDagster, storage_modules

    modules = storage_modules()
    assert modules == [
        "heaters_resources.orchestration.pg_storage",
        "heaters_resources.orchestration.event_log",
        "dagster_postgres.schedule_storage",
    ]
    for name in modules:
        importlib.import_module(name)
    assert storage_modules(tmp_path / "missing.yaml") == []
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    dagster_home = tmp_path / "dh"
    dagster_home.mkdir()
    log = tmp_path / "logs" / "warm.log"
    with WarmDagster("json", log, [*modules, "no_such_module_here"]) as cli:
        cli.run(["instance", "info"], {**os.environ, "DAGSTER_HOME": str(dagster_home)})
    assert f"$DAGSTER_HOME: {dagster_home}" in log.read_text()
    with WarmDagster("json", log) as cli, pytest.raises(RunFailedError, match=r"warm\.log"):
        cli.run(["job", "execute", "-m", "no_such_module_here", "-j", "x"], dict(os.environ))
    t0 = time.monotonic()
    with WarmDagster("json", log) as idle:
        pass
    assert idle._proc.returncode == 0 and time.monotonic() - t0 < 30  # ended, ran nothing


def test_submit_and_status(home: Path, tmp_path: Path) -> None:
    env = _env(home)
    proc = subprocess.run(
        [str(BIN / "heaters"), "submit", str(SAMPLE_VIDEO), "https://example.com/v.mp4"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout)["submitted"] == [1, 2]
    bad = subprocess.run(
        [str(BIN / "heaters"), "submit", "ftp://nope/x.mp4"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "neither an http(s) URL" in bad.stderr
    status = subprocess.run(
        [str(BIN / "heaters"), "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    videos = json.loads(status.stdout)["videos"]
    assert [(v["id"], v["state"]) for v in videos] == [(1, "new"), (2, "new")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status }
  }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { status tags { key value } } }
  }
}"""


def _launch_backfill(
    port: int, assets: list[str], partitions: list[str], config: dict[str, Any], log: Path
) -> tuple[str, list[dict[str, Any]]]:
    """Launch a backfill as the UI's *Launch backfill* does (the same GraphQL mutation, run
    config included), wait for its runs to end, and return its id and its runs.

    Whether the daemon then marks the backfill completed is checked by
    :func:`_backfill_completed` later: the daemon looks at backfills every 30 s (Dagster's
    fixed interval), so waiting for it here would cost a whole interval per backfill."""
    launched = graphql(
        port,
        LAUNCH_BACKFILL,
        {
            "params": {
                "assetSelection": [{"path": [a]} for a in assets],
                "partitionNames": partitions,
                "runConfigData": config,
                "title": "from the test",
            }
        },
    )
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id = result["backfillId"]
    deadline = time.time() + 300
    while True:
        status = graphql(port, BACKFILL_STATUS, {"id": backfill_id})
        runs: list[dict[str, Any]] = status["runsOrError"]["results"]
        if runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return backfill_id, runs
        state = status["partitionBackfillOrError"]["status"]
        assert state in ("REQUESTED", "COMPLETED", "COMPLETED_SUCCESS"), (state, runs)
        assert time.time() < deadline, (state, runs, log.read_text()[-4000:])
        time.sleep(2)


def _backfill_completed(port: int, backfill_id: str, log: Path) -> None:
    """The daemon marks the backfill completed, with every run a success."""
    deadline = time.time() + 120
    while True:
        status = graphql(port, BACKFILL_STATUS, {"id": backfill_id})
        state = status["partitionBackfillOrError"]["status"]
        if state not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        assert time.time() < deadline, (state, log.read_text()[-4000:])
        time.sleep(2)
    runs = status["runsOrError"]["results"]
    assert state in ("COMPLETED", "COMPLETED_SUCCESS"), (state, runs, log.read_text()[-4000:])
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs


def _clip_states(db: Database) -> dict[str, int]:
    with db.session() as s:
        return dict(s.execute(select(Clip.state, func.count()).group_by(Clip.state)).all())


def _reprocess_from_the_ui(port: int, db: Database, log: Path) -> None:
    """The two reprocessing backfills of the README, launched as from the UI."""
    with db.session() as s:
        n = s.scalar(select(func.count()).select_from(Clip)) or 0
    # 1. new keyframe strategy for every clip: the video's partition (one video) -> one run
    first, runs = _launch_backfill(
        port,
        ["keyframes", "sprite_sheet"],
        ["1"],
        {
            "ops": {
                "clip_artifacts": {"config": {"overwrite": True, "strategy": "midpoint"}},
            }
        },
        log,
    )
    assert [r["status"] for r in runs] == ["SUCCESS"]
    with db.session() as s:
        rows = s.execute(
            select(ClipArtifact.kind, ClipArtifact.strategy, func.count()).group_by(
                ClipArtifact.kind, ClipArtifact.strategy
            )
        ).all()
    assert {(kind, strategy) for kind, strategy, _ in rows if kind == "keyframe"} == {
        ("keyframe", "midpoint")
    }  # the three "multi" keyframes of each clip were replaced
    # one proxy per clip too (not cut yet), replaced with the sprite, never added
    assert {kind: count for kind, _, count in rows} == {
        "keyframe": n,
        "sprite_sheet": n,
        "proxy": n,
    }
    assert _clip_states(db) == {"pending_review": n}

    # 2. re-splice the video with a longer minimum scene: fewer clips, which the new-clips
    # sensor then takes to review
    second, runs = _launch_backfill(
        port,
        ["clip_splits"],
        ["1"],
        {
            "ops": {
                "clip_splits": {
                    "config": {"min_scene_len": 4.0, "short_policy": "merge", "overwrite": True}
                }
            }
        },
        log,
    )
    assert [r["status"] for r in runs] == ["SUCCESS"]
    deadline = time.time() + 300
    while (states := _clip_states(db)) != {"pending_review": sum(states.values())}:
        assert time.time() < deadline, (states, log.read_text()[-4000:])
        time.sleep(3)
    with db.session() as s:
        lengths = list(
            s.scalars(select(Clip.end_frame - Clip.start_frame).order_by(Clip.start_frame))
        )
    assert 1 < len(lengths) < n and min(lengths[:-1]) >= 100  # 4 s at 25 fps
    for backfill_id in (first, second):
        _backfill_completed(port, backfill_id, log)


@pytest.mark.slow
def _asset_page_shows_its_preview(port: int, db: Database) -> None:
    """Dagster's own UI, in Chromium: the keyframes asset's page for the video's partition names
    its own clips and shows its inline preview image (a screenshot is kept in
    test-artifacts/)."""
    from tests.review.test_review_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        return  # the browser tests are skipped the same way
    sync_api = pytest.importorskip("playwright.sync_api")
    with db.session() as s:
        vid, first = s.execute(
            select(Clip.source_video_id, Clip.identifier).order_by(Clip.start_frame).limit(1)
        ).one()
    url = f"http://127.0.0.1:{port}/assets/keyframes?view=partitions&partition={vid}"
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        # Markdown metadata opens in a dialog ("[Show Markdown]"); a first visit may show
        # Dagster's community dialog over it.
        show = page.get_by_text("[Show Markdown]").first
        show.wait_for(timeout=90_000)
        page.wait_for_timeout(1500)  # the community dialog comes up just after the page
        skip = page.get_by_role("button", name="Skip")
        if skip.count():
            skip.click()
            page.get_by_text("Join the Dagster community").wait_for(state="hidden")
        show.click()
        preview = page.locator('img[src^="data:image/jpeg;base64,"]').first
        preview.wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(500)  # the dialog's fade-in, for the screenshot
        assert preview.evaluate("img => img.naturalWidth") == 160  # a decoded thumbnail
        assert page.get_by_text(first, exact=True).count() >= 1  # its own clips, by name
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dagster-keyframes-partition.png"), full_page=True)
        chromium.close()


def test_dagster_dev_picks_up_inbox_video(home: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = open(tmp_path / "dagster-dev.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [str(BIN / "heaters"), "dev", "--port", str(port)],
        env=_env(home, HEATERS_INBOX_SETTLE_SECONDS="0"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
                assert time.time() < deadline, "dagster dev did not come up"
                time.sleep(1)
        (home / "inbox").mkdir(exist_ok=True)
        shutil.copy(SAMPLE_VIDEO, home / "inbox" / "dropped.mp4")
        db = _db(home)
        deadline = time.time() + 420
        states: dict[str, int] = {}
        while time.time() < deadline:
            states = _clip_states(db)
            if states == {"pending_review": len(SAMPLE_CUTS) + 1}:
                break
            time.sleep(3)
        assert states == {"pending_review": len(SAMPLE_CUTS) + 1}, (
            states,
            (tmp_path / "dagster-dev.log").read_text()[-4000:],
        )
        with db.session() as s:
            kinds = dict(
                s.execute(select(ClipArtifact.kind, func.count()).group_by(ClipArtifact.kind)).all()
            )
        assert kinds == {
            "keyframe": 3 * (len(SAMPLE_CUTS) + 1),
            "sprite_sheet": len(SAMPLE_CUTS) + 1,
            "proxy": len(SAMPLE_CUTS) + 1,  # HEATERS_CLIPS=proxy, the default
        }
        _asset_page_shows_its_preview(port, db)
        _reprocess_from_the_ui(port, db, tmp_path / "dagster-dev.log")
        db.dispose()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        _wait_group_gone(proc.pid)
        log.close()


def _wait_group_gone(pgid: int, timeout: float = 30.0) -> None:
    """Wait for every process of ``heaters dev``'s group, not only its first one, to end.

    A run still finishing when the test stops (the new-clips run after the re-splice) writes
    its end to the database as it goes; outliving the fixture's ``stop_server``, it would start
    the embedded server again and leave it running after the test (seen once)."""
    deadline, killed = time.time() + timeout, False
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        if time.time() > deadline:
            if killed:  # only zombies no one reaps can be left: nothing more to wait for
                return
            os.killpg(pgid, signal.SIGKILL)
            deadline, killed = time.time() + 10, True
        time.sleep(0.2)
