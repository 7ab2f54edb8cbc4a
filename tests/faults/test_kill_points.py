"""Fault injection: a worker killed with SIGKILL at named points (heaters_resources.faults),
the database killed mid-step, then the user's natural retry.

After each retry: no row left in an in-progress state, one video row per file (no two rows
with one fingerprint), the stored
objects exactly the ones rows reference, no scratch folder left, and no Dagster run left
STARTED once the reaper has looked. Every run is a real process: `heaters demo FILE` (which
runs `dagster job execute` once) or a Python process calling the step a Dagster op calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select, update

from heaters_resources import states
from heaters_resources.db.embedded_pg import ensure_server, stop_server
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipEmbedding, SourceVideo
from heaters_resources.states import leases
from heaters_resources.store.cleanup import referenced_keys
from tests.media_factory import make_video

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

# Along the demo's path, in order: each kill lands later than the one before, and each run
# is the retry of the run killed before it.
DEMO_POINTS = [
    "ingest:after-download",
    "ingest:before-commit",
    "splice:after-detect",
    "splice:between-uploads#2",
    "splice:before-commit",
    "artifacts:after-decode",
    "keyframes:between-uploads#2",
    "sprites:between-uploads#2",
]


class Library:
    """One HEATERS_HOME with its embedded Postgres, a private TMPDIR (to see scratch left
    behind) and helpers to run the platform's commands in it."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.tmp = root / "tmp"
        self.home.mkdir()
        self.tmp.mkdir()
        self.db = Database(ensure_server(self.home).url)
        self.db.ensure_migrated()

    def env(self, fault: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))}
        env.update(HEATERS_HOME=str(self.home), TMPDIR=str(self.tmp))
        if fault:
            env["HEATERS_FAULT_POINT"] = fault
        return env

    def demo(
        self, video: Path, fault: str | None = None, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "heaters"), "demo", str(video), *extra],
            env=self.env(fault),
            capture_output=True,
            text=True,
            timeout=600,
        )

    def step(self, code: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
        """``code`` in a new process, as a Dagster op runs it (db, store, steps, leases bound)."""
        prelude = (
            "from heaters_resources import states, steps\n"
            "from heaters_resources.db.engine import get_database\n"
            "from heaters_resources.states import leases\n"
            "from heaters_resources.steps import embeddings\n"
            "from heaters_resources.store.objects import object_store_from_settings\n"
            "db, store = get_database(), object_store_from_settings()\n"
        )
        return subprocess.run(
            [sys.executable, "-c", prelude + code],
            cwd=ROOT,
            env=self.env(fault),
            capture_output=True,
            text=True,
            timeout=300,
        )

    def reap(self) -> dict[str, int]:
        """What the reaper sensor does on its next tick, against this library's instance."""
        from heaters_assets.sensors.reaper import reap_once
        from heaters_resources.orchestration.instance import prepare_dagster_home
        from heaters_resources.settings import Settings

        env = prepare_dagster_home(Settings.from_env(self.env()))
        with _instance(env) as instance:
            counts = reap_once(instance, self.db)
            started = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            counts["still_started"] = len(started)
        return counts

    def assert_clean(self) -> None:
        with self.db.session() as s:
            busy = [
                (table.__name__, row_id, state)
                for table in (SourceVideo, Clip)
                for row_id, state in s.execute(select(table.id, table.state))
                if state in leases.IN_PROGRESS["clip" if table is Clip else "source_video"]
            ]
            assert busy == [], busy
            fingerprints = list(s.scalars(select(SourceVideo.fingerprint)))
            assert None not in fingerprints and len(set(fingerprints)) == len(fingerprints)
            referenced = referenced_keys(s)
        root = self.home / "objects"
        stored = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        assert stored == referenced, (sorted(stored - referenced), sorted(referenced - stored))
        scratch = [p.name for p in self.tmp.iterdir() if p.name.startswith("heaters-")]
        assert scratch == [], scratch


class _instance:
    """A DagsterInstance for DAGSTER_HOME in ``env`` (the demo's Postgres-backed instance)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __enter__(self) -> dg.DagsterInstance:
        self.saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "HEATERS_DAGSTER_PG_URL")}
        os.environ.update({k: self.env[k] for k in self.saved})
        self.instance = dg.DagsterInstance.get()
        return self.instance

    def __exit__(self, *exc: object) -> None:
        self.instance.dispose()
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    lib = Library(tmp_path_factory.mktemp("faults"))
    yield lib
    lib.db.dispose()
    stop_server(lib.home)


def test_demo_killed_at_every_point_then_retried(library: Library, tmp_path: Path) -> None:
    video = make_video(tmp_path / "killed.mp4", [30, 40, 25], size=(160, 90))
    # Every clip cut at splice (the splice's upload points); the proxy default is killed in
    # test_review_proxies_and_the_cut_on_approval_killed_then_retried.
    for point in DEMO_POINTS:
        proc = library.demo(video, point, "--clips", "exact")
        assert proc.returncode != 0, f"{point}: the run was not killed"
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    proc = library.demo(video, None, "--clips", "exact")  # the user's natural retry
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["clips"] == 3
    assert "resuming it" in proc.stderr
    with library.db.session() as s:
        assert set(s.scalars(select(Clip.state))) == {"pending_review"}
        (video_row,) = s.scalars(select(SourceVideo))
        assert video_row.attempts >= 1 and video_row.error is None
    counts = library.reap()
    assert counts["still_started"] == 0  # runs whose worker was killed are reported failed
    assert counts["runs"] >= 1
    library.assert_clean()


def test_postgres_killed_mid_step_then_retried(library: Library, tmp_path: Path) -> None:
    video = make_video(tmp_path / "pg.mp4", [35, 30], size=(160, 90))
    proc = library.demo(video, "splice:before-commit!postgres")
    assert proc.returncode != 0
    library.db.dispose()
    library.db = Database(ensure_server(library.home).url)  # the retry restarts the server too
    proc = library.demo(video)
    assert proc.returncode == 0, proc.stderr[-3000:]
    library.reap()
    library.assert_clean()


def _ids(library: Library, name: str) -> list[int]:
    with library.db.session() as s:
        vid = s.scalar(select(SourceVideo.id).where(SourceVideo.source.endswith(name)))
        return list(
            s.scalars(
                select(Clip.id)
                .where(Clip.source_video_id == vid, Clip.superseded_at.is_(None))
                .order_by(Clip.start_frame)
            )
        )


EMBED = (
    "vids = [{vid}]\n"
    "with leases.holding(db, None):\n"
    "    clips = steps.clips_of_videos(db, vids, {{'approved', 'embedding_failed'}})\n"
    "    embeddings.embed_clips(db, store, [i for _, i in clips])\n"
)


def test_embedding_merge_and_split_killed_then_retried(library: Library, tmp_path: Path) -> None:
    video = make_video(tmp_path / "review.mp4", [30, 40, 30, 35], size=(160, 90))
    # Clip files cut at splice: merge and split then join and cut files (their upload points).
    assert library.demo(video, None, "--clips", "exact").returncode == 0
    a, b, c, d = _ids(library, "review.mp4")
    db = library.db
    vid = states.get_clip(db, a).source_video_id

    # embedding: killed after the model ran, before the vectors were committed
    states.approve_clip(db, a)
    states.approve_clip(db, b)
    assert library.step(EMBED.format(vid=vid), "embedding:before-commit").returncode == -9
    assert {states.get_clip(db, x).state for x in (a, b)} == {"embedding"}
    proc = library.step(EMBED.format(vid=vid))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {states.get_clip(db, x).state for x in (a, b)} == {"embedded"}
    with db.session() as s:  # one vector per clip: the retry replaced, never added
        counted = s.execute(
            select(ClipEmbedding.clip_id, func.count())
            .where(ClipEmbedding.clip_id.in_([a, b, c, d]))
            .group_by(ClipEmbedding.clip_id)
        ).all()
    # a, b (approved, embedded now) and c, d (pending: the review descriptor from the demo)
    assert sorted(counted) == [(a, 1), (b, 1), (c, 1), (d, 1)]

    # merge: killed after the merged file was uploaded, before the rows were committed
    states.request_merge(db, d)  # c + d
    merge = f"with leases.holding(db, 'run-m'):\n    steps.execute_merge(db, store, [{c}, {d}])\n"
    assert library.step(merge, "merge:before-commit").returncode == -9
    assert library.step(merge).returncode == 0  # what run retries do: the same op again
    assert {states.get_clip(db, x).state for x in (c, d)} == {"archived"}

    # split-at: killed between the two parts' uploads
    (merged,) = [i for i in _ids(library, "review.mp4") if i not in (a, b)]
    clip = states.get_clip(db, merged)
    with db.session() as s:  # review needs pending_review; the artifacts are not the point
        s.execute(update(Clip).where(Clip.id == merged).values(state="pending_review"))
    frame = clip.start_frame + 20
    states.request_split(db, merged, frame)
    split = (
        f"with leases.holding(db, 'run-s'):\n"
        f"    steps.execute_split(db, store, {merged}, {frame})\n"
    )
    assert library.step(split, "split-at:between-uploads#1").returncode == -9
    assert library.step(split).returncode == 0
    assert states.get_clip(db, merged).state == "archived"
    library.reap()
    library.assert_clean()


def test_review_proxies_and_the_cut_on_approval_killed_then_retried(
    library: Library, tmp_path: Path
) -> None:
    """HEATERS_CLIPS=proxy (the default; explicit here): killed while proxies are recorded,
    then while approved clips' files are uploaded and before they are recorded; each retry
    finishes with every stored object referenced (an upload no row took is replaced by the
    retry's and recorded)."""
    video = make_video(tmp_path / "proxy.mp4", [33, 41, 27], size=(160, 90))  # own content
    points = [p for p in DEMO_POINTS if not p.startswith("splice:between-uploads")]
    for point in points:  # the splice uploads nothing in this mode
        proc = library.demo(video, point, "--clips", "proxy")
        assert proc.returncode != 0, f"{point}: the run was not killed"
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert library.demo(video, None, "--clips", "proxy").returncode == 0
    ids = _ids(library, "proxy.mp4")
    db = library.db
    assert all(states.get_clip(db, x).storage_key is None for x in ids)
    library.reap()
    library.assert_clean()
    vid = states.get_clip(db, ids[0]).source_video_id
    for x in ids[:2]:
        states.approve_clip(db, x)
    for point in ("cut:between-uploads#2", "cut:before-commit"):
        assert library.step(EMBED.format(vid=vid), point).returncode == -9
        assert all(states.get_clip(db, x).storage_key is None for x in ids[:2])
        library.reap()
    proc = library.step(EMBED.format(vid=vid))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for x in ids[:2]:
        clip = states.get_clip(db, x)
        assert clip.state == "embedded" and clip.storage_key
    assert states.get_clip(db, ids[2]).storage_key is None
    library.assert_clean()


def test_undo_before_the_queued_merge_runs_skips_it(library: Library, tmp_path: Path) -> None:
    video = make_video(tmp_path / "undo.mp4", [30, 30], size=(160, 90))
    assert library.demo(video).returncode == 0
    a, b = _ids(library, "undo.mp4")
    db = library.db
    states.request_merge(db, b)
    states.undo_review(db, b)
    code = (
        "import json\n"
        f"out = steps.execute_merge(db, store, [{a}, {b}])\n"
        "print(json.dumps({'skipped': out.skipped, 'new': out.new_clip_ids}))\n"
    )
    proc = library.step(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["new"] == [] and "no longer merging" in out["skipped"]
    assert {states.get_clip(db, x).state for x in (a, b)} == {"pending_review"}
    library.assert_clean()


def test_the_same_file_twice_is_one_video(library: Library, tmp_path: Path) -> None:
    video = make_video(tmp_path / "twice.mp4", [30, 30], size=(160, 90))
    copy = tmp_path / "copy-of-twice.mp4"
    copy.write_bytes(video.read_bytes())
    first = library.demo(video)
    second = library.demo(copy)  # other name, same bytes
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    ids = [json.loads(p.stdout.strip().splitlines()[-1])["video_id"] for p in (first, second)]
    assert ids[0] == ids[1]
    library.assert_clean()
