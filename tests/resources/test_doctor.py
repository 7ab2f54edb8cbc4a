"""`heaters doctor` (heaters_resources.doctor): each kind of damage a crash leaves is found,
a dry run changes nothing, and a repair fixes what can be fixed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from heaters_resources import states as st
from heaters_resources.db.engine import Database
from heaters_resources.doctor import examine
from heaters_resources.steps.common import SCRATCH_PREFIX
from heaters_resources.store import keys
from heaters_resources.store.objects import LocalObjectStore
from tests.child_process import run_in_child

ROOT = Path(__file__).resolve().parents[2]


def _killed_child(db: Database, code: str) -> None:
    proc = run_in_child(db, code + "faults.point('x')\n", "x")
    assert proc.returncode == -9, proc.stderr


def test_doctor_finds_and_repairs(
    db: Database, local_store: LocalObjectStore, tmp_path: Path
) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"data")
    vid = st.create_source_video(db, "https://example.test/v")
    st.start_downloading(db, vid)
    original = keys.source_original_key(vid, "mp4")
    local_store.upload_file(src, original)
    st.complete_downloading(db, vid, original_key=original, fps=25.0, frame_count=200)
    st.start_splicing(db, vid)
    # clip 2's file is missing from the store: a dangling key
    clip_keys = [keys.clip_key(vid, keys.clip_identifier(vid, a, a + 100)) for a in (0, 100)]
    local_store.upload_file(src, clip_keys[0])
    a, b = st.create_clips_from_splice(
        db, vid, [st.ClipSpec(0, 100, clip_keys[0]), st.ClipSpec(100, 200, clip_keys[1])]
    )
    orphan = keys.clip_key(vid, keys.clip_identifier(vid, 300, 400))
    local_store.upload_file(src, orphan)
    _killed_child(db, f"st.start_keyframing(db, {a})\n")  # a stuck row
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _killed_child(  # a stale scratch folder
        db,
        "from pathlib import Path\nfrom heaters_resources.steps.common import scratch_dir\n"
        f"cm = scratch_dir(Path({str(scratch)!r}))\nd = cm.__enter__()\n",
    )

    report = examine(db, local_store, min_age=timedelta(0), scratch_base=scratch)
    assert not report.healthy and not report.repaired
    assert report.orphan_objects == [orphan]
    assert report.dangling_keys == [clip_keys[1]] and report.videos_to_redo == [vid]
    assert len(report.stuck_rows) == 1 and report.stuck_rows[0].startswith(f"clip {a} (keyframing)")
    assert len(report.stale_scratch) == 1
    # a dry run changed nothing
    assert local_store.exists(orphan) and st.get_clip(db, a).state == "keyframing"
    assert len(list(scratch.glob(f"{SCRATCH_PREFIX}*"))) == 1

    fixed = examine(db, local_store, repair=True, min_age=timedelta(0), scratch_base=scratch)
    assert fixed.repaired and fixed.orphan_objects == [orphan]
    assert not local_store.exists(orphan)
    assert st.get_clip(db, a).state == "keyframing_failed"
    assert list(scratch.iterdir()) == []
    after = examine(db, local_store, min_age=timedelta(0), scratch_base=scratch)
    assert after.orphan_objects == [] and after.stuck_rows == [] and after.stale_scratch == []
    assert after.dangling_keys == [clip_keys[1]]  # cannot be recreated: reported again
    assert b


def test_doctor_command(tmp_path: Path) -> None:
    """The CLI: a healthy new library exits 0; an orphan makes it exit 1 (shown in a table, or
    in the JSON report with --json) until `--repair` removes it."""
    import json

    from heaters_resources.db.embedded_pg import stop_server

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))}
    env.update(HEATERS_HOME=str(home), TMPDIR=str(tmp_path))
    heaters = str(Path(sys.executable).parent / "heaters")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [heaters, "doctor", "--min-age-hours", "0", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        first = run("--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["healthy"] is True
        orphan = home / "objects" / "clips" / "9" / "9_0_10.mp4"
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(b"x")
        # For people: the summary and the finding in a table, no JSON.
        found = run()
        assert found.returncode == 1 and "1 orphan object(s)" in found.stdout
        assert "clips/9/9_0_10.mp4" in found.stdout and "not healthy" in found.stdout
        assert "{" not in found.stdout
        # For scripts: only the JSON document.
        found = run("--json")
        assert found.returncode == 1
        assert json.loads(found.stdout)["orphan_objects"] == ["clips/9/9_0_10.mp4"]
        assert orphan.exists()
        fixed = run("--repair")
        assert fixed.returncode == 0, fixed.stderr
        assert not orphan.exists() and "Traceback" not in fixed.stderr
    finally:
        stop_server(home)
