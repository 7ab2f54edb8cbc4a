"""Ray mode across simulated hosts: runs spread over two worker nodes, and a node that dies.

The cluster (benchmarks/netns_cluster.py): a Ray head and two workers, each in its own network
namespace with its own address, host name and scratch folder; Postgres (with pgvector) and an
S3 endpoint (moto's server) listen on the bridge, reached over the network by every run. The
platform runs as a user would run it: ``HEATERS_RAY_ADDRESS=... heaters submit`` (local files
uploaded to S3), ``heaters dev`` (its daemon launches every run as a Ray job through
``HeatersRayRunLauncher``), a backfill launched through the UI's GraphQL mutation.

1. Four submitted videos are ingested, cut and given keyframes and sprites; their runs ran on
   both worker nodes (read from Ray's own record of where each job's driver ran).
2. A re-splice backfill over the four videos, and one worker node killed (every process of its
   namespace, SIGKILL) while a run is on it: that run is failed by the run monitor, retried on
   the surviving node, and in the end no row is stuck in an in-progress state, no lease is
   left, and every clip's object is byte-identical to the one made before the kill.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from benchmarks.bench_ray import resplice_backfill
from benchmarks.netns_cluster import Cluster, cluster, run_placements, unavailable
from benchmarks.ray_platform import BIN, BUSY, Platform, platform, submit, wait
from heaters_resources.db.models import Clip, Lease, SourceVideo
from heaters_resources.states import leases
from tests.dagster_graphql import graphql
from tests.media_factory import make_video

pytestmark = [
    pytest.mark.skipif(bool(unavailable()), reason=unavailable() or ""),
    pytest.mark.timeout(900),
]
RUN_LOG = """
query($id: ID!) {
  logsForRun(runId: $id) {
    ... on EventConnection { events { ... on MessageEvent { message timestamp } } }
  }
}"""


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(tmp_path / "cluster", workers=2, cpus_per_worker=1) as c:
        yield c


def _diagnosis(p: Platform) -> str:
    """What a timeout was waiting for: unfinished runs' last events, Ray's jobs and nodes."""
    from ray.job_submission import JobSubmissionClient

    out = []
    for run in p.runs():
        if run["status"] in BUSY:
            events = graphql(p.port, RUN_LOG, {"id": run["runId"]})["logsForRun"]["events"]
            lines = [f"{e.get('timestamp')} {e.get('message', '')[:300]}" for e in events[-25:]]
            out.append(f"run {run['runId']} {run['status']}:\n" + "\n".join(lines))
    for job in JobSubmissionClient(p.cluster.ray_address).list_jobs():
        out.append(f"ray job {job.submission_id} {job.status} {str(job.message)[:300]}")
    head = p.cluster.ray_address.removeprefix("http://").rsplit(":", 1)[0]
    status = subprocess.run(
        [str(BIN / "ray"), "status", "--address", f"{head}:6380"], capture_output=True, text=True
    )
    return "\n".join(out) + "\n" + status.stdout[-2000:] + "\n" + p.log.read_text()[-3000:]


def test_runs_spread_over_two_hosts_and_a_dead_host_loses_nothing(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    # A dead node's leases lapse after 6 s (its heartbeat renews them every third of it).
    # Clip files cut at splice (HEATERS_CLIPS=exact, forwarded to the Ray jobs): the re-splice
    # a dead node interrupts must give the same files, compared byte for byte.
    with platform(
        ray_cluster, tmp_path / "home", HEATERS_LEASE_SECONDS="6", HEATERS_CLIPS="exact"
    ) as p:
        videos = []
        for i in range(4):  # distinct content (fingerprints); re-splicing takes a few seconds
            shots = [20 + 5 * i, 30, 25, 40, 30, 35]
            videos.append(make_video(tmp_path / f"v{i}.mp4", shots, size=(160, 90)))
        assert len(submit(p, videos)) == 4
        with p.db.session() as s:  # uploaded: no run needs this machine's disk
            sources = list(s.scalars(select(SourceVideo.source)))
        assert all(v.startswith("store:uploads/") for v in sources), sources
        t0 = time.time()
        _spread(p)
        print(f"phase one {time.time() - t0:.0f} s")
        t0 = time.time()
        _node_dies(p)
        print(f"phase two {time.time() - t0:.0f} s")


def _spread(p: Platform) -> None:
    """Sensors start ingest and artifact runs; Ray places them on both workers."""
    wait("four videos cut into clips", lambda: p.settled(4), 420, lambda: _diagnosis(p))
    runs = p.runs()
    assert runs and all(r["status"] == "SUCCESS" for r in runs), runs
    places = run_placements(p.cluster.ray_address)
    used = {ip for run in runs for ip in places.get(run["runId"], [])}
    assert used == {w.ip for w in p.cluster.workers}, (places, p.cluster.workers)


def _node_dies(p: Platform) -> None:
    """Re-splice every video; kill a worker node while one of the runs holds a video there."""
    before = p.clip_objects()
    resplice_backfill(p, ["1", "2", "3", "4"])  # the backfill benchmarks/bench_ray.py times
    victim = p.cluster.workers[1]

    def splicing_on_victim() -> str | None:
        """The run holding a video in `splicing` from the second worker (its lease's host)."""
        with p.db.session() as s:
            held = s.execute(
                select(Lease.run_id)
                .join(SourceVideo, SourceVideo.lease_id == Lease.id)
                .where(SourceVideo.state == "splicing", Lease.host == victim.name)
            ).first()
        return str(held[0]) if held else None

    killed_run = wait("a re-splice on the second worker", splicing_on_victim, 240, poll=0.2)
    assert victim.kill() > 0  # mid-step: its video row is leased
    t0 = time.time()
    wait(
        "the backfill settled after the node died", lambda: p.settled(4), 300, lambda: _diagnosis(p)
    )
    print(f"settled {time.time() - t0:.0f} s after the kill")

    runs = {r["runId"]: r for r in p.runs()}
    assert runs[killed_run]["status"] == "FAILURE", runs[killed_run]
    retried = [
        r for r in runs.values()
        if {"key": "dagster/parent_run_id", "value": killed_run} in r["tags"]
    ]  # fmt: skip
    assert retried and retried[-1]["status"] == "SUCCESS", retried
    places = run_placements(p.cluster.ray_address)
    assert places[retried[-1]["runId"]][-1] == p.cluster.workers[0].ip, places
    _nothing_stuck(p)
    assert p.clip_objects() == before


def _nothing_stuck(p: Platform) -> None:
    with p.db.session() as s:
        stuck: list[Any] = list(
            s.execute(
                select(SourceVideo.id, SourceVideo.state).where(
                    SourceVideo.state.in_(leases.IN_PROGRESS["source_video"])
                )
            )
        )
        stuck += s.execute(
            select(Clip.id, Clip.state).where(Clip.state.in_(leases.IN_PROGRESS["clip"]))
        ).all()
        # A dead holder's lease row may outlive the rows it held until the reaper sensor's next
        # pass (60 s); what must not exist is a row held by anyone, or a lease still live.
        holding = [
            s.scalar(select(func.count()).select_from(t).where(t.lease_id.is_not(None)))
            for t in (Clip, SourceVideo)
        ]
        live = s.scalar(
            select(func.count()).select_from(Lease).where(Lease.expires_at > func.now())
        )
    assert not stuck and holding == [0, 0] and live == 0, (stuck, holding, live)
