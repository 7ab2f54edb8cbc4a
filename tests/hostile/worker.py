"""A long-lived process that runs command-line cases one after another, for the hostile corpus.

Why: starting Python, Typer, NumPy and OpenCV costs about a second per process; hundreds of
cases each in its own `python -m heaters_media` would take minutes. This worker imports both
entry points once, then runs each case exactly as the console scripts do
(`heaters_media.cli.main`, `heaters_resources.cli.main.run`) with its own argv, stdin, stdout
and stderr, and answers with the exit status and both outputs. An exception that escapes the
entry point is reported the way the interpreter would print it (a "Traceback" on stderr, exit
status 1), so a case cannot pass by crashing.

Protocol (one JSON object a line): in `{"entry": "media" | "heaters", "argv": [...],
"stdin": "..."}`, out `{"code": int, "stdout": str, "stderr": str}`. The protocol uses a
duplicate of the original stdout; file descriptor 1 itself points at /dev/null, so a child
process (ffmpeg) that writes to its inherited stdout cannot corrupt it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any


def _entry(name: str) -> Callable[[], Any]:
    if name == "media":
        from heaters_media.cli import main

        return main
    from heaters_resources.cli.main import run

    return run


def run_case(entry: str, argv: list[str], stdin: str) -> dict[str, Any]:
    """One command line, isolated in its own argv / stdin / stdout / stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_stdin = sys.argv, sys.stdin
    prog = "heaters_media" if entry == "media" else "heaters"
    sys.argv, sys.stdin = [prog, *argv], io.StringIO(stdin)
    code: int = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                _entry(entry)()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what the interpreter would print, and its exit status
                err.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv, sys.stdin = saved_argv, saved_stdin
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    _entry("media"), _entry("heaters")  # import both once, before the first case
    protocol.write('{"ready": true}\n')
    protocol.flush()
    for line in sys.stdin:
        case = json.loads(line)
        answer = run_case(case["entry"], case["argv"], case.get("stdin", ""))
        protocol.write(json.dumps(answer) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
