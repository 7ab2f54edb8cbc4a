"""A worker in a fresh Python process, for tests that kill it (heaters_resources.faults)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from heaters_resources.db.engine import Database

ROOT = Path(__file__).resolve().parents[1]


def run_in_child(
    db: Database, code: str, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (with ``db``, ``st`` and ``faults`` bound) in a fresh Python process; with
    ``fault``, HEATERS_FAULT_POINT names the point where it kills itself."""
    prelude = (
        "from heaters_resources.db.engine import Database\n"
        "from heaters_resources import states as st, faults\n"
        f"db = Database({db.url!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEATERS_")}
    if fault:
        env["HEATERS_FAULT_POINT"] = fault
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
