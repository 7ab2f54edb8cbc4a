"""Leases and the reaper (heaters_resources.states.leases): a row held by a worker that died
goes back to a retryable state with the reason `interrupted`; a live worker's rows are left
alone. Workers are real processes killed with SIGKILL (heaters_resources.faults)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from heaters_resources import states as st
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, Lease, SourceVideo
from heaters_resources.states import leases
from heaters_resources.steps.common import SCRATCH_PREFIX, scratch_dir, sweep_stale_scratch
from heaters_resources.store import keys
from tests.child_process import run_in_child

ROOT = Path(__file__).resolve().parents[2]


def _spliced(db: Database, n: int = 2) -> tuple[int, list[int]]:
    vid = st.create_source_video(db, "https://example.test/v")
    st.start_downloading(db, vid)
    st.complete_downloading(
        db,
        vid,
        original_key=keys.source_original_key(vid, "mp4"),
        fps=25.0,
        frame_count=100 * n,
        duration_s=4.0 * n,
        width=64,
        height=36,
    )
    st.start_splicing(db, vid)
    ids = st.create_clips_from_splice(
        db, vid, [st.ClipSpec(i * 100, i * 100 + 100) for i in range(n)]
    )
    return vid, ids


def _clip(db: Database, cid: int) -> Clip:
    return st.get_clip(db, cid)


def test_a_killed_worker_s_rows_are_interrupted_and_restartable(db: Database) -> None:
    _, (a, b) = _spliced(db)
    proc = run_in_child(
        db, f"st.start_keyframing_many(db, [{a}, {b}])\nfaults.point('test:held')\n", "test:held"
    )
    assert proc.returncode == -9, proc.stderr  # SIGKILL: no except, no finally
    assert {_clip(db, a).state, _clip(db, b).state} == {"keyframing"}
    assert _clip(db, a).lease_id is not None

    # The natural retry starts the step again: the dead holder's row is interrupted first.
    st.start_keyframing(db, a)
    clip = _clip(db, a)
    assert clip.state == "keyframing" and clip.attempts == 2  # a retry from keyframing_failed
    # The sensor's sweep interrupts the other one, with the reason.
    reaped = leases.reap(db)
    assert [(r.id, r.state) for r in reaped] == [(b, "keyframing")]
    clip = _clip(db, b)
    assert clip.state == "keyframing_failed"
    assert clip.error is not None and clip.error.startswith("interrupted: worker process")
    assert clip.lease_id is None


def test_a_live_worker_keeps_its_rows(db: Database) -> None:
    _, (a, _) = _spliced(db)
    st.start_keyframing(db, a)  # held by this process, which is alive
    assert leases.reap(db) == []
    with pytest.raises(st.InvalidTransitionError):
        st.start_keyframing(db, a)
    assert _clip(db, a).state == "keyframing"


def test_other_hosts_are_judged_by_expiry_and_by_their_dagster_run(db: Database) -> None:
    _, (a, b) = _spliced(db)
    st.start_keyframing(db, a)
    lease_id = _clip(db, a).lease_id
    with db.session() as s:
        s.execute(
            update(Lease)
            .where(Lease.id == lease_id)
            .values(host="another-host", run_id="run-1", expires_at=text("now() + interval '1 h'"))
        )
    assert leases.reap(db, run_status=lambda run: "STARTED") == []  # alive: not expired
    assert leases.reap(db, run_status=lambda run: "FAILURE")[0].reason == (
        "interrupted: Dagster run run-1 ended (FAILURE)"
    )
    st.start_keyframing(db, b)
    lease_id = _clip(db, b).lease_id
    with db.session() as s:
        s.execute(
            update(Lease)
            .where(Lease.id == lease_id)
            .values(host="another-host", expires_at=text("now() - interval '1 s'"))
        )
    (gone,) = leases.reap(db)
    assert gone.id == b and "expired" in gone.reason
    assert leases.reap(db) == []
    with db.session() as s:  # the dead holders' lease rows are dropped with nothing held
        assert s.scalar(select(Lease.id).where(Lease.host == "another-host")) is None


def test_requested_merges_wait_for_their_run_but_not_for_a_dead_one(db: Database) -> None:
    vid, (a, b) = _spliced(db)
    for cid in (a, b):
        st.start_keyframing(db, cid)
    with db.session() as s:
        s.execute(update(Clip).values(state="pending_review", lease_id=None))
    st.request_merge(db, b)
    assert leases.reap(db) == []  # requested, its run not started yet: left alone
    proc = run_in_child(
        db,
        "from heaters_resources.states import leases\n"
        f"assert leases.claim(db, 'clip', [{a}, {b}], 'merging') == []\n"
        "faults.point('test:held')\n",
        "test:held",
    )
    assert proc.returncode == -9, proc.stderr
    # A new run of the same request takes the rows over from the dead holder...
    assert leases.claim(db, "clip", [a, b], "merging") == []
    assert leases.reap(db) == []
    # ... and a dead holder's merge is interrupted back to review by the sweep.
    with db.session() as s:
        s.execute(update(Clip).values(lease_id=999_999))  # a lease that does not exist
    assert {r.id for r in leases.reap(db)} == {a, b}
    assert {_clip(db, a).state, _clip(db, b).state} == {"pending_review"}
    assert vid


def test_holding_interrupts_what_the_block_left_held(db: Database) -> None:
    _, (a, _) = _spliced(db)
    with leases.holding(db, "run-xyz") as holder:
        st.start_keyframing(db, a)
        with db.session() as s:
            assert s.scalar(select(Lease.run_id).where(Lease.owner == holder.owner)) == "run-xyz"
    clip = _clip(db, a)
    assert clip.state == "keyframing_failed" and "ended without finishing" in (clip.error or "")
    with db.session() as s:
        assert s.scalar(select(Lease.id).where(Lease.owner == holder.owner)) is None


def test_video_steps_are_interrupted_too(db: Database) -> None:
    vid = st.create_source_video(db, "https://example.test/w")
    proc = run_in_child(db, f"st.start_downloading(db, {vid})\nfaults.point('x')\n", "x")
    assert proc.returncode == -9
    assert st.get_source_video(db, vid).state == "downloading"
    st.start_downloading(db, vid)  # what re-materializing does: no InvalidTransitionError
    with db.session() as s:
        video = s.get(SourceVideo, vid)
        assert video is not None and video.state == "downloading" and video.attempts == 2


def test_heartbeat_renews_the_lease(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEATERS_LEASE_SECONDS", "0.4")
    _, (a, _) = _spliced(db)
    st.start_keyframing(db, a)
    lease_id = _clip(db, a).lease_id

    def expiry() -> float:
        with db.session() as s:
            return float(
                s.scalar(
                    text("SELECT extract(epoch FROM expires_at) FROM leases WHERE id = :i"),
                    {"i": lease_id},
                )
            )

    first = expiry()
    deadline = time.monotonic() + 10
    while expiry() <= first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert expiry() > first  # renewed by the heartbeat thread, not by another transition


def test_concurrent_starts_of_a_dead_holder_s_row_restart_it_once(db: Database) -> None:
    _, (a, _) = _spliced(db)
    proc = run_in_child(db, f"st.start_keyframing(db, {a})\nfaults.point('x')\n", "x")
    assert proc.returncode == -9
    outcomes: list[str] = []

    def go() -> None:
        try:
            st.start_keyframing(db, a)
            outcomes.append("won")
        except (st.ConflictError, st.InvalidTransitionError) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1, outcomes
    assert _clip(db, a).attempts == 2


def test_scratch_of_a_killed_step_is_swept(tmp_path: Path, db: Database) -> None:
    code = (
        "from pathlib import Path\n"
        "from heaters_resources.steps.common import scratch_dir\n"
        f"with scratch_dir(Path({str(tmp_path)!r})) as d:\n"
        "    (d / 'partial.mp4').write_bytes(b'x' * 1000)\n"
        "    faults.point('x')\n"
    )
    proc = run_in_child(db, code, "x")
    assert proc.returncode == -9
    (left,) = tmp_path.glob(f"{SCRATCH_PREFIX}*")
    with scratch_dir(tmp_path) as mine:  # the next step on this host removes it
        assert not left.exists() and mine.exists()
        assert sweep_stale_scratch(tmp_path) == []  # its own (live) folder is kept
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_tells_files_apart_by_content_not_name(tmp_path: Path) -> None:
    from heaters_resources.fingerprint import ENDS, file_fingerprint

    big = bytes(range(256)) * (3 * ENDS // 256)  # 3 ends long: a middle that is not read
    a, b, c, d = (tmp_path / n for n in "abcd")
    a.write_bytes(big)
    b.write_bytes(big)  # same bytes, another name
    c.write_bytes(big[:-1] + b"\x00")  # last byte differs
    d.write_bytes(big + b"x")  # one byte longer
    assert file_fingerprint(a) == file_fingerprint(b)
    assert len({file_fingerprint(p) for p in (a, c, d)}) == 3
    small = tmp_path / "small"
    small.write_bytes(b"tiny")
    assert file_fingerprint(small) != file_fingerprint(a)
