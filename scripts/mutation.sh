#!/usr/bin/env bash
# Mutation testing (mutmut) of the core rules: the transition checks, the review/undo/merge/split
# rules, the archive purge, the asset-check invariants, cut selection and minimum scene length,
# keyframe and sprite frame selection, object keys and the review app's security checks.
# MUTATION.md says which functions are mutated, which tests run, and why each surviving mutant
# is equivalent. Not part of scripts/test.sh (it takes minutes); run it by hand or nightly.
#
# Usage: scripts/mutation.sh            (6 to 12 minutes on 2 cores)
# Prints as its LAST line `mutation: killed K of N`; exits 0 when K >= 85 % of N.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,ml
export PATH="$PWD/.venv/bin:$PATH"

# The functions that hold the rules (mutmut names: <module>.x_<function> or
# <module>.xǁ<Class>ǁ<method>). mutmut mutates whole files (pyproject.toml [tool.mutmut]
# only_mutate); only the mutants of these functions are run and counted.
FUNCTIONS=(
  heaters_resources.states.table.x__t
  heaters_resources.states.core.x_lock_rows
  heaters_resources.states.core.x_check_transition
  heaters_resources.states.core.x_apply_transition
  heaters_resources.states.core.x_single_transition
  heaters_resources.states.core.x_mark_failed
  heaters_resources.states.review.x_clip_version
  heaters_resources.states.review.x__guard
  heaters_resources.states.review.x__review
  heaters_resources.states.review.x_request_split
  heaters_resources.states.review.x_request_merge
  heaters_resources.states.review.x_undo_review
  heaters_resources.states.review.x_complete_merge
  heaters_resources.states.review.x_complete_split
  heaters_resources.steps.review.x_clip_object_keys
  heaters_resources.steps.review.x_purge_archived_clips
  heaters_resources.steps.checks.x_tiling_problems
  heaters_resources.steps.checks.x__image_size
  heaters_resources.steps.checks.x_artifact_problems
  heaters_resources.steps.checks.x_embedding_problems
  heaters_media.scenes.x_adaptive_ratio
  heaters_media.scenes.x_candidate_cuts
  heaters_media.scenes.x_enforce_min_length
  heaters_media.scenes.x_scenes_from_cuts
  heaters_media.keyframes.x_keyframe_positions
  heaters_media.sprite.x_fps_filter_frames
  heaters_media.sprite.x__rate
  heaters_media.sprite.x_plan_sprite
  'heaters_resources.store.keys.x_*'
  heaters_resources.review.security.x_is_loopback
  heaters_resources.review.security.x_check_bind
  'heaters_resources.review.security.xǁSignerǁ*'
  heaters_resources.review.security.x__header
  heaters_resources.review.security.x__host_name
  heaters_resources.review.security.x__origin_of
  'heaters_resources.review.security.xǁSecurityMiddlewareǁ*'
  heaters_resources.review.security.x_verify_csrf
)
patterns=()
for f in "${FUNCTIONS[@]}"; do patterns+=("${f}__mutmut_*"); done

work="$(mktemp -d /tmp/heaters-mutation.XXXXXX)"
cleanup() {
  # Stop the embedded servers this run started (one per test slot), then drop the scratch dir.
  for home in "$work"/pg/slot*/; do
    [ -d "$home" ] && .venv/bin/python -c \
      'import sys; from heaters_resources.db.embedded_pg import stop_server; stop_server(sys.argv[1])' \
      "$home" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# mutmut runs pytest once per mutant, so every mutant would start (initdb) and stop its own
# embedded PostgreSQL through tests/conftest.py: about 5 s each. This plugin, loaded only here,
# gives each test process one of a few long-lived servers instead (a "slot", held by a file lock
# for the life of the process; mutmut's workers run two at a time), so a mutant costs the time
# of its tests. Each test still gets emptied tables from conftest's `db` fixture.
cat > "$work/heaters_mutation_pg.py" <<'PY'
"""pytest plugin of scripts/mutation.sh: one long-lived embedded server per concurrent process."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO, Any

from heaters_resources.db import embedded_pg

ROOT = Path(os.environ["HEATERS_MUTATION_PG_ROOT"])
_slot: dict[int, tuple[IO[str], Path]] = {}


def _slot_home() -> Path:
    """This process's server home; a forked worker takes a free slot of its own."""
    pid = os.getpid()
    if pid not in _slot:
        ROOT.mkdir(parents=True, exist_ok=True)
        i = 0
        while True:
            handle = open(ROOT / f"slot{i}.lock", "a+")  # held open until the process exits
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                i += 1
                continue
            _slot[pid] = (handle, ROOT / f"slot{i}")
            break
    return _slot[pid][1]


def _ensure_server(home: Any) -> embedded_pg.EmbeddedServer:
    return embedded_pg.ensure_server(_slot_home())


def _keep_server(home: Any, timeout: float = 20.0) -> bool:
    return False


def pytest_plugin_registered(plugin: Any, manager: Any) -> None:
    if getattr(plugin, "__name__", "") == "tests.conftest":
        plugin.ensure_server = _ensure_server
        plugin.stop_server = _keep_server
PY
export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
export PYTEST_ADDOPTS="-p heaters_mutation_pg${PYTEST_ADDOPTS:+ $PYTEST_ADDOPTS}"
export HEATERS_MUTATION_PG_ROOT="$work/pg"
# pytest's own temporary folders (tmp_path) away from other pytest runs on this machine
export PYTEST_DEBUG_TEMPROOT="$work/tmp"
mkdir -p "$PYTEST_DEBUG_TEMPROOT"

rm -rf mutants
start=$(date +%s)
set +e
mutmut run --max-children 2 "${patterns[@]}" > "$work/mutmut.log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
if [ "$rc" != 0 ]; then
  tail -n 60 "$work/mutmut.log" >&2
  echo "mutation: mutmut run failed (exit $rc)" >&2
fi
mutmut results --all true > "$work/results.txt" 2>/dev/null || true

python - "$work/results.txt" "$elapsed" "${patterns[@]}" <<'PY'
"""Count the results of the selected functions' mutants; print survivors and the summary."""

import collections
import fnmatch
import sys

results_file, elapsed, patterns = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
status: dict[str, str] = {}
for line in open(results_file, encoding="utf-8"):
    name, sep, state = line.strip().rpartition(": ")
    if sep and any(fnmatch.fnmatchcase(name, p) for p in patterns):
        status[name] = state
by_state = collections.Counter(status.values())
not_killed = sorted(n for n, s in status.items() if s != "killed")
for name in not_killed:
    print(f"  {status[name]}: {name}")
print(
    f"mutation: {len(status)} mutants in {elapsed}s; "
    + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items()))
)
killed, total = by_state["killed"], len(status)
print(f"mutation: killed {killed} of {total}")
sys.exit(0 if total and killed * 100 >= 85 * total else 1)
PY
