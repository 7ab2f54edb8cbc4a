"""The repository's dagster.yaml, observed through a real daemon: run queue limits and retries.

`dagster.yaml` promises a QueuedRunCoordinator (at most 4 runs in progress; runs tagged
`heaters/resource=embedding` one at a time, `heaters/resource=media` two at a time) and run
retries (up to 2). Nothing else in the suite runs a daemon against that file, so a typo in a tag
key or value, a limit Dagster silently ignores or a dropped `run_retries` block would pass it.

Here the real file is copied, unchanged, into a temporary DAGSTER_HOME (as
`orchestration/instance.py:prepare_dagster_home` does), its Postgres storage a fresh database on
the session's embedded server. A tiny code location written by the test holds jobs whose single
op records when it ran; the ops of the limit jobs hold until the test releases them (then at
least a few seconds), so that the queue can be seen full. Every run is submitted through the
webserver's GraphQL `launchRun` (the UI's path into the run coordinator) before
`dagster-daemon run` starts. Checked: with 4 runs held, a whole queue tick later nothing else
has started and the 4 are the ones the limits allow; over the whole test, at no instant more
runs in progress (from the coordinator's RUN_STARTING event to the run's end) or ops running
than the limits allow; every run of the limit jobs succeeded; a job that fails once is retried
once and succeeds; a job that always fails is retried exactly twice, then no more.

Launching a run is slow on a small machine (the daemon waits for each run worker to start,
seconds apiece), which is why the first runs are held rather than merely sleeping: with short
sleeps the runs of one tick hardly overlap and the limits would never be reached.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from subprocess import Popen
from typing import IO, Any

import pytest
import yaml

from heaters_resources.orchestration.event_log import EVENT_BATCH_SIZE
from tests.dagster_graphql import graphql

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TAG = "heaters/resource"
LOCATION = "limits"
SLEEP = 3.0  # seconds each limit op holds its "resource", at least
WAIT = 150.0  # bound of each wait below
QUEUE_TICK = 5.0  # QueuedRunCoordinator's default dequeue_interval_seconds
ACTIVE = {"STARTING", "STARTED"}
LIMIT_JOBS = {"media_job": "media", "embedding_job": "embedding", "plain_job": None}

# Submitted in this order, all before the daemon starts. The failing jobs (and their retries)
# have a higher priority, so their retry chains run first. Then the queue holds, in order,
# media x5, embedding x3, plain x2: the coordinator may start media 1-2, embedding 1 and plain 1
# (4 = max_concurrent_runs), and these hold until released.
SUBMIT = ["flaky_job", "broken_job"] + ["media_job"] * 5 + ["embedding_job"] * 3 + ["plain_job"] * 2

CODE = '''
"""Tiny jobs for tests/assets/test_daemon_limits.py: each op records when it held its resource."""

import json
import time
from pathlib import Path

import dagster as dg

RECORDS = Path({records!r})
RELEASE = Path({release!r})
SLEEP = {sleep!r}


def _hold(context: dg.OpExecutionContext, seconds: float, *, until_released: bool) -> None:
    start = time.time()
    (RECORDS / f"{{context.run_id}}.holding").touch()
    while until_released and not RELEASE.exists() and time.time() < start + {wait!r}:
        time.sleep(0.2)
    time.sleep(max(0.0, start + seconds - time.time()))
    record = {{
        "run_id": context.run_id,
        "job": context.job_name,
        "resource": context.run.tags.get({tag!r}),
        "start": start,
        "end": time.time(),
    }}
    (RECORDS / f"{{context.run_id}}.json").write_text(json.dumps(record))


@dg.op
def hold_op(context: dg.OpExecutionContext) -> None:
    _hold(context, SLEEP, until_released=True)


@dg.op
def flaky_op(context: dg.OpExecutionContext) -> None:
    _hold(context, 1.0, until_released=False)
    marker = RECORDS.parent / "flaky.marker"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("first attempt fails")


@dg.op
def broken_op(context: dg.OpExecutionContext) -> None:
    _hold(context, 1.0, until_released=False)
    raise RuntimeError("always fails")


@dg.job(tags={{{tag!r}: "media"}})
def media_job() -> None:
    hold_op()


@dg.job(tags={{{tag!r}: "embedding"}})
def embedding_job() -> None:
    hold_op()


@dg.job
def plain_job() -> None:
    hold_op()


# Ahead in the queue (retries keep their parent's tags), so that the retry chains do not wait
# behind the limit runs.
@dg.job(tags={{"dagster/priority": "1"}})
def flaky_job() -> None:
    flaky_op()


@dg.job(tags={{"dagster/priority": "1"}})
def broken_job() -> None:
    broken_op()


# In-process: one Python process per run, not one more per step (a 2-core machine runs these).
defs = dg.Definitions(
    jobs=[media_job, embedding_job, plain_job, flaky_job, broken_job],
    executor=dg.in_process_executor,
)
'''

WORKSPACE_STATUS = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
RUNS = """
query {
  runsOrError {
    ... on Runs {
      results {
        runId jobName status startTime endTime parentRunId rootRunId
        tags { key value }
      }
    }
  }
}"""
EVENTS = """
query($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { timestamp eventType } } }
  }
}"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
END_EVENTS = {"RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant; one ending exactly when another starts is no overlap."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def _summary(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((r["jobName"], r["status"]) for r in runs)


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def _wait_for_location(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        assert proc.poll() is None, _log_tail(log)
        assert time.monotonic() < deadline, "the webserver did not load the code location"
        try:
            data = graphql(port, WORKSPACE_STATUS)
        except OSError:
            time.sleep(1)
            continue
        entries = data["workspaceOrError"].get("locationEntries") or []
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry is not None and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            assert loaded["__typename"] == "RepositoryLocation", loaded
            return
        time.sleep(1)


def _launch(port: int, job: str) -> str:
    result = graphql(
        port,
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": "__repository__",
                    "jobName": job,
                },
                "runConfigData": {},
            }
        },
    )["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


def _runs(port: int) -> list[dict[str, Any]]:
    return graphql(port, RUNS)["runsOrError"]["results"]


def _wait_for_runs(port: int, expected: int, log: Path) -> list[dict[str, Any]]:
    """All runs once `expected` of them exist and every one has finished."""
    deadline = time.monotonic() + WAIT
    while True:
        runs = _runs(port)
        if len(runs) >= expected and all(r["status"] in TERMINAL for r in runs):
            return runs
        assert time.monotonic() < deadline, (_summary(runs), _log_tail(log))
        time.sleep(2)


def _wait_for_held(port: int, records: Path, log: Path) -> set[str]:
    """The ids of the limit runs in progress once 4 of them are inside their op, holding."""
    deadline = time.monotonic() + WAIT
    while True:
        runs = _runs(port)
        held = {
            r["runId"]
            for r in runs
            if r["status"] in ACTIVE
            and r["jobName"] in LIMIT_JOBS
            and (records / f"{r['runId']}.holding").exists()
        }
        if len(held) >= 4:
            return held
        assert time.monotonic() < deadline, (_summary(runs), _log_tail(log))
        time.sleep(1)


def _in_progress(port: int, run_id: str) -> tuple[float, float]:
    """When the run coordinator counted the run as in progress: from the RUN_STARTING event it
    writes on dequeuing the run to the run's end event (seconds since the epoch)."""
    logs = graphql(port, EVENTS, {"runId": run_id})["logsForRun"]
    assert logs["__typename"] == "EventConnection", logs
    times: dict[str, float] = {}
    for event in logs["events"]:
        if event.get("eventType") == "RUN_STARTING":
            times["start"] = int(event["timestamp"]) / 1000
        elif event.get("eventType") in END_EVENTS:
            times["end"] = int(event["timestamp"]) / 1000
    assert set(times) == {"start", "end"}, (run_id, logs["events"])
    return times["start"], times["end"]


def _spawn(args: list[str], env: dict[str, str], cwd: Path, log: IO[bytes]) -> Popen[bytes]:
    """A Dagster process in a session of its own, so that it and its children (code servers,
    run workers) can be stopped as one process group."""
    return subprocess.Popen(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _write_code_location(tmp_path: Path, records: Path, release: Path) -> Path:
    (tmp_path / "limits_defs.py").write_text(
        CODE.format(records=str(records), release=str(release), sleep=SLEEP, tag=TAG, wait=WAIT)
    )
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        textwrap.dedent(
            f"""\
            load_from:
              - python_file:
                  relative_path: limits_defs.py
                  location_name: {LOCATION}
                  working_directory: {tmp_path}
            """
        )
    )
    return workspace


@pytest.mark.slow
def test_dagster_yaml_queue_limits_and_retries(fresh_database_url: str, tmp_path: Path) -> None:
    # The real instance configuration, byte for byte (what prepare_dagster_home copies).
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    config = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[storage]["config"] == {"postgres_url": {"env": "HEATERS_DAGSTER_PG_URL"}}

    records = tmp_path / "records"
    records.mkdir()
    release = tmp_path / "release"
    workspace = _write_code_location(tmp_path, records, release)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(dagster_home),
        HEATERS_HOME=str(tmp_path / "heaters_home"),
        # A database of its own: the Heaters tables live in the session's `postgres` database.
        HEATERS_DAGSTER_PG_URL=fresh_database_url,
        DAGSTER_EVENT_BATCH_SIZE=EVENT_BATCH_SIZE,  # as heaters dev sets it
    )
    port = _free_port()
    web_log, daemon_log = tmp_path / "webserver.log", tmp_path / "daemon.log"
    procs: list[Popen[bytes]] = []
    began = time.monotonic()
    with open(web_log, "wb") as web_out, open(daemon_log, "wb") as daemon_out:
        try:
            web = _spawn(
                ["dagster-webserver", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
                env,
                tmp_path,
                web_out,
            )
            procs.append(web)
            _wait_for_location(port, web, web_log)
            submitted = {_launch(port, job): job for job in SUBMIT}
            assert {r["status"] for r in _runs(port)} == {"QUEUED"}  # no daemon yet
            procs.append(
                _spawn(["dagster-daemon", "run", "-w", str(workspace)], env, tmp_path, daemon_out)
            )
            held = _wait_for_held(port, records, daemon_log)
            # More than a queue tick later: still these, and nothing else was started.
            time.sleep(QUEUE_TICK + 2)
            snapshot = _runs(port)
            release.touch()
            # flaky_job: one retry; broken_job: two retries (max_retries), then no more.
            runs = _wait_for_runs(port, len(SUBMIT) + 1 + 2, daemon_log)
            progress = {r["runId"]: _in_progress(port, r["runId"]) for r in runs}
            # Leave the daemon's retry consumer (a 5 s tick) time to (wrongly) retry the last
            # broken_job failure, then look again.
            last_failure = max(
                progress[r["runId"]][1] for r in runs if r["jobName"] == "broken_job"
            )
            time.sleep(max(0.0, last_failure + 8 - time.time()))
            runs = _runs(port)
        finally:
            for proc in reversed(procs):
                _stop(proc)
    print(f"{len(runs)} runs in {time.monotonic() - began:.1f}s, processes included")

    assert len(runs) == len(SUBMIT) + 3, _summary(runs)
    by_id = {r["runId"]: r for r in runs}
    assert set(submitted) <= set(by_id) and set(progress) == set(by_id)
    first = {job: [i for i, j in submitted.items() if j == job] for job in LIMIT_JOBS}

    # The full queue, a tick after 4 runs were held: in progress exactly the first two media
    # runs, the first embedding run and the first plain run; the other limit runs still queued.
    status = {r["runId"]: r["status"] for r in snapshot}
    jobs = {i: submitted.get(i, "retry") for i in status}
    active_now = sorted((jobs[i], st) for i, st in status.items() if st in ACTIVE)
    assert {i for i, st in status.items() if st in ACTIVE} == held, active_now
    allowed = {*first["media_job"][:2], first["embedding_job"][0], first["plain_job"][0]}
    assert held == allowed, active_now
    waiting = {*first["media_job"][2:], *first["embedding_job"][1:], *first["plain_job"][1:]}
    assert {i for i, st in status.items() if st == "QUEUED"} >= waiting, _summary(snapshot)

    # Every run of the limit jobs succeeded; every run carries its job's tag (retries too).
    for run_id, job in submitted.items():
        if job in LIMIT_JOBS:
            assert by_id[run_id]["status"] == "SUCCESS", by_id[run_id]
    resource = {r["runId"]: LIMIT_JOBS.get(r["jobName"]) for r in runs}
    assert {run_id: _tags(by_id[run_id]).get(TAG) for run_id in by_id} == resource

    # Each op recorded when it ran, inside its run's in-progress interval.
    ops = {p.stem: json.loads(p.read_text()) for p in records.glob("*.json")}
    assert set(ops) == set(by_id)
    for run_id, op in ops.items():
        assert op["resource"] == resource[run_id]
        assert progress[run_id][0] <= op["start"] < op["end"] <= progress[run_id][1], run_id

    def overlap(kind: str | None) -> tuple[int, int]:
        """Most runs of a kind (None: all) at one instant: (in progress, ops running)."""
        ids = [i for i in by_id if kind is None or resource[i] == kind]
        return (
            _max_overlap([progress[i] for i in ids]),
            _max_overlap([(ops[i]["start"], ops[i]["end"]) for i in ids]),
        )

    # Over the whole test the limits held, and (the held runs) were reached.
    seen = {"media": overlap("media"), "embedding": overlap("embedding"), "all": overlap(None)}
    assert seen == {"media": (2, 2), "embedding": (1, 1), "all": (4, 4)}, seen

    # flaky_job: the first run failed; its automatic retry (retry number 1) succeeded.
    flaky = sorted((r for r in runs if r["jobName"] == "flaky_job"), key=lambda r: r["startTime"])
    assert [r["status"] for r in flaky] == ["FAILURE", "SUCCESS"], flaky
    assert flaky[0]["runId"] in submitted and "dagster/retry_number" not in _tags(flaky[0])
    assert flaky[1]["parentRunId"] == flaky[1]["rootRunId"] == flaky[0]["runId"]
    assert _tags(flaky[1])["dagster/retry_number"] == "1"

    # broken_job: retried exactly max_retries (2) times, each retry the child of the one before,
    # the last failure marked as not to be retried.
    broken = sorted((r for r in runs if r["jobName"] == "broken_job"), key=lambda r: r["startTime"])
    assert [r["status"] for r in broken] == ["FAILURE"] * 3, broken
    root = broken[0]["runId"]
    assert root in submitted and "dagster/retry_number" not in _tags(broken[0])
    for number, (parent, child) in enumerate(itertools.pairwise(broken), start=1):
        assert child["parentRunId"] == parent["runId"] and child["rootRunId"] == root
        assert _tags(child)["dagster/retry_number"] == str(number)
    assert [_tags(r).get("dagster/will_retry") for r in broken] == ["true", "true", "false"]
