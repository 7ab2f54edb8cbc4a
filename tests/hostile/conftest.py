"""Fixtures of the hostile corpus: the bad files (made once), one command worker for the
session (see `worker.py`), and the checks every case ends with.

A case passes only when its answer is typed: for `python -m heaters_media`, stdout is exactly
one JSON error object whose type matches the exit status (heaters_media/errors.py); for
`heaters`, exit status 2 with one `heaters: ...` line on stderr, or the search commands' JSON
error on stdout. A traceback, a success, or no answer within the timeout (a hang) fails it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from heaters_resources.db.engine import Database
from tests.hostile.files import BAD_FILES, bad_files

ROOT = Path(__file__).resolve().parents[2]
#: heaters_media/errors.py: each error type's exit status.
EXIT_CODES = {
    "invalid_input": 2,
    "unsupported_media": 3,
    "corrupt_media": 4,
    "download_failed": 5,
    "tool_failed": 6,
}
#: A case that has not answered by then is hung (the slowest real case takes ~1 s).
CASE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Answer:
    code: int
    stdout: str
    stderr: str


class Worker:
    """One `tests.hostile.worker` process; restarted after a case that hung."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str] = queue.Queue()

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.worker"],
            cwd=self.cwd,
            env={**self.env, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines = queue.Queue()
        out, lines = self.proc.stdout, self.lines
        assert out is not None

        def pump() -> None:
            for line in out:
                lines.put(line)
            lines.put("")  # the worker ended

        threading.Thread(target=pump, daemon=True).start()
        assert json.loads(self.lines.get(timeout=120)) == {"ready": True}

    def run(self, entry: str, argv: list[str], stdin: str = "") -> Answer:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        request = {"entry": entry, "argv": argv, "stdin": stdin}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=CASE_TIMEOUT)
        except queue.Empty:
            self.stop()
            pytest.fail(f"no answer in {CASE_TIMEOUT:.0f} s (a hang): {argv}")
        if not line:
            self.proc = None
            pytest.fail(f"the worker died on {argv}")
        data = json.loads(line)
        return Answer(data["code"], data["stdout"], data["stderr"])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="session")
def bad(hostile_dir: Path) -> dict[str, Path]:
    """The bad files by name, made once."""
    files = bad_files(hostile_dir / "files")
    assert sorted(files) == sorted(BAD_FILES)
    return files


@pytest.fixture(scope="session")
def worker(session_db: Database, hostile_dir: Path) -> Iterator[Worker]:
    """The command worker, on the test database and a scratch HEATERS_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))}
    env.update(
        HEATERS_HOME=str(hostile_dir / "home"),
        HEATERS_DATABASE_URL=session_db.url,
        COLUMNS="200",
    )
    (hostile_dir / "cwd").mkdir(exist_ok=True)
    w = Worker(env, hostile_dir / "cwd")
    yield w
    w.stop()


def media_error(answer: Answer, kinds: tuple[str, ...] = tuple(EXIT_CODES)) -> dict[str, Any]:
    """The typed-error contract of `python -m heaters_media`; returns the error object."""
    assert "Traceback" not in answer.stderr, answer.stderr[-3000:]
    lines = answer.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line: {answer.stdout[-2000:]!r}"
    data = json.loads(lines[0])
    assert data.get("status") == "error", f"not an error: {lines[0][:1000]}"
    error = data["error"]
    assert error["type"] in kinds, error
    assert answer.code == EXIT_CODES[error["type"]], (answer.code, error)
    assert isinstance(error["message"], str) and error["message"].strip()
    return dict(error)


def heaters_error(answer: Answer, code: int = 2) -> str:
    """The typed-error contract of `heaters`: exit status `code`, no traceback, and either one
    `heaters: ...` line on stderr or a JSON error object on stdout; returns the message."""
    text = answer.stdout + answer.stderr
    assert "Traceback" not in text, text[-3000:]
    assert answer.code == code, (answer.code, text[-2000:])
    if answer.stdout.strip().startswith("{"):
        data = json.loads(answer.stdout.strip().splitlines()[-1])
        assert data["status"] == "error" and data["error"]["message"], data
        return str(data["error"]["message"])
    lines = answer.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("heaters: "), answer.stderr[-2000:]
    assert all(line.startswith("heaters: ") for line in lines), answer.stderr[-2000:]
    return lines[-1]
