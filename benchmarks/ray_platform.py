"""Heaters in Ray mode on a simulated cluster (benchmarks/netns_cluster.py), driven as a user
drives it: ``heaters submit``, ``heaters dev`` (webserver + daemon), backfills launched through
the UI's GraphQL mutation. Shared by the multi-host test and ``benchmarks/bench_ray.py``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from benchmarks.netns_cluster import Cluster, free_port, ray_env
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, SourceVideo
from tests.dagster_graphql import LAUNCH_BACKFILL, graphql

BIN = Path(sys.executable).parent
BUCKET = "heaters-ray"
RUNS = """
query { runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""
BUSY = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


@dataclass
class Platform:
    """A running ``heaters dev`` in Ray mode, its environment, UI port and database."""

    cluster: Cluster
    env: dict[str, str]
    port: int
    db: Database
    log: Path

    def heaters(self, *args: str) -> str:
        proc = subprocess.run(
            [str(BIN / "heaters"), *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"heaters {args[0]} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def runs(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = graphql(self.port, RUNS)["runsOrError"]["results"]
        return results

    def launch_backfill(self, asset: str, partitions: list[str], config: dict[str, Any]) -> str:
        launched = graphql(
            self.port,
            LAUNCH_BACKFILL,
            {
                "params": {
                    "assetSelection": [{"path": [asset]}],
                    "partitionNames": partitions,
                    "runConfigData": {"ops": {asset: {"config": config}}},
                    "title": f"{asset} across the cluster",
                }
            },
        )["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        return str(launched["backfillId"])

    def settled(self, videos: int) -> bool:
        """Every video cut, every clip through its artifacts, and no run waiting or running."""
        with self.db.session() as s:
            states = dict(
                s.execute(select(SourceVideo.state, func.count()).group_by(SourceVideo.state)).all()
            )
            clip_states = set(s.scalars(select(Clip.state).distinct()))
        busy = [r for r in self.runs() if r["status"] in BUSY]
        return states == {"spliced": videos} and clip_states == {"pending_review"} and not busy

    def clip_objects(self) -> dict[tuple[int, int, int], str]:
        """(video, first frame, end frame) -> SHA-256 of the clip file in S3."""
        s3 = s3_client(self.cluster)
        with self.db.session() as s:
            rows = s.execute(
                select(
                    Clip.source_video_id, Clip.start_frame, Clip.end_frame, Clip.storage_key
                ).where(Clip.superseded_at.is_(None))
            ).all()
        out = {}
        for vid, start, end, key in rows:
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            out[(vid, start, end)] = hashlib.sha256(body).hexdigest()
        return out


def s3_client(c: Cluster) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=c.s3_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def wait(what: str, ok: Any, timeout: float, detail: Any = None, poll: float = 2.0) -> Any:
    """``ok()``'s first truthy value; TimeoutError with ``detail()`` appended after ``timeout``."""
    deadline = time.time() + timeout
    while True:
        value = ok()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"timed out: {what}\n" + (detail() if detail else ""))
        time.sleep(poll)


@contextlib.contextmanager
def platform(c: Cluster, home: Path, **extra_env: str) -> Iterator[Platform]:
    """Shared state prepared (database, bucket) and ``heaters dev`` running in Ray mode."""
    env = {**ray_env(), **c.heaters_env(home, BUCKET), **extra_env}
    admin = create_engine(c.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE heaters"))
    admin.dispose()
    s3_client(c).create_bucket(Bucket=BUCKET)
    db = Database(env["HEATERS_DATABASE_URL"])
    port = free_port("127.0.0.1")
    log = c.logs / "heaters-dev.log"
    with open(log, "wb") as out:
        # Its own process group: `heaters dev` starts `dagster dev`, which starts a webserver,
        # a daemon and code servers; stopping only the first left the others running.
        dev = subprocess.Popen(
            [str(BIN / "heaters"), "dev", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        p = Platform(c, env, port, db, log)
        try:
            wait("the Dagster webserver", lambda: _answers(p), 180, lambda: log.read_text()[-3000:])
            yield p
        finally:
            os.killpg(dev.pid, signal.SIGTERM)
            try:
                dev.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
            db.dispose()


def _answers(p: Platform) -> bool:
    try:
        p.runs()
        return True
    except (AssertionError, OSError):
        return False


def submit(p: Platform, videos: list[Path]) -> list[int]:
    ids: list[int] = json.loads(p.heaters("submit", *map(str, videos)))["submitted"]
    return ids
