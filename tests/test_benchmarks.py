"""The benchmarks still run (small sizes): their figures are quoted in notes, so they must not
rot. Only that they run and print their verdict lines is checked, never a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_bench_db_runs() -> None:
    out = _bench("benchmarks/bench_db.py", "--clips", "300", "--repeat", "1")
    assert "embedded db cold start" in out and "ratio:" in out
    assert "start_keyframing_many" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["-m", "benchmarks.bench_pgvector", "--n", "2000", "--dim", "32", "--queries", "5"],
            ["HNSW index:", "recall@10", "speed-up:"],
        ),
        (
            ["-m", "benchmarks.bench_split", "--minutes", "0.2"],
            ["reference (one full re-encode)", "split (auto: copy where possible)"],
        ),
    ],
)
def test_other_benchmarks_run(args: list[str], expected: list[str]) -> None:
    out = _bench(*args)
    assert all(line in out for line in expected), out
