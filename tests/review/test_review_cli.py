"""`heaters review`: where the access token comes from, and what happens without one.

The token may come from `--token-file`, `--token` (with a warning: argv is visible in `ps`)
or HEATERS_REVIEW_TOKEN; it must be at least 16 characters; bound off loopback without one,
the command makes one up and prints it once. The last test starts the real command and talks
to it over HTTP.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heaters_resources.cli.review import review_token
from heaters_resources.db.embedded_pg import EmbeddedServer

HEATERS = Path(sys.executable).parent / "heaters"
LONG = "0123456789abcdefXYZ"


def test_token_sources_and_their_order(tmp_path: Path) -> None:
    """File, then option, then environment; nothing on loopback means no token."""
    file = tmp_path / "token"
    file.write_text(f"  {LONG}-file  \nsecond line ignored\n")
    assert review_token("0.0.0.0", None, file, f"{LONG}-env") == f"{LONG}-file"
    assert review_token("0.0.0.0", f"{LONG}-arg", None, f"{LONG}-env") == f"{LONG}-arg"
    assert review_token("0.0.0.0", None, None, f"{LONG}-env") == f"{LONG}-env"
    assert review_token("127.0.0.1", None, None, None) is None


def test_a_network_bind_without_a_token_gets_a_random_one() -> None:
    first = review_token("0.0.0.0", None, None, None)
    second = review_token("192.168.1.5", None, None, None)
    assert first and second and first != second
    assert len(first) >= 16 and re.fullmatch(r"[A-Za-z0-9_-]+", first)


@pytest.mark.parametrize(
    ("given", "file_text", "env", "message"),
    [
        ("short", None, None, "at least 16 characters (got 5)"),
        (None, "short\n", None, "at least 16 characters (got 5)"),
        (None, "", None, "at least 16 characters (got 0)"),
        (None, None, "x" * 15, "at least 16 characters (got 15)"),
        (LONG, LONG, None, "not both"),
    ],
)
def test_bad_tokens_are_refused(
    tmp_path: Path, given: str | None, file_text: str | None, env: str | None, message: str
) -> None:
    file = None
    if file_text is not None:
        file = tmp_path / "token"
        file.write_text(file_text)
    with pytest.raises(ValueError, match=re.escape(message)):
        review_token("0.0.0.0", given, file, env)


def test_an_unreadable_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read --token-file"):
        review_token("0.0.0.0", None, tmp_path / "missing", None)
    with pytest.raises(ValueError, match="cannot read --token-file"):
        review_token("0.0.0.0", None, tmp_path, None)  # a folder


def _env(pg_server: EmbeddedServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))}
    env.update(HEATERS_HOME=str(tmp_path / "home"), HEATERS_DATABASE_URL=pg_server.url, **extra)
    return env


def test_short_token_option_is_one_line_exit_2(pg_server: EmbeddedServer, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(HEATERS), "review", "--token", "short"],
        env=_env(pg_server, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("heaters: warning: --token is visible to other users in `ps`")
    assert lines[1].startswith("heaters: Invalid value for --token: the review access token")
    assert len(lines) == 2 and "Traceback" not in proc.stderr


def test_network_bind_prints_a_generated_token_once(
    pg_server: EmbeddedServer, tmp_path: Path
) -> None:
    """`heaters review --host 0.0.0.0 --port 0`: a random token in the printed URL (with the
    real port), refused without it, accepted with it, rate-limited after wrong guesses."""
    proc = subprocess.Popen(
        [str(HEATERS), "review", "--host", "0.0.0.0", "--port", "0"],
        env=_env(pg_server, tmp_path),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until the URL is printed (or the process ends)
        found = re.fullmatch(r"review app on http://0\.0\.0\.0:(\d+)/\?token=([\w-]+)\n", line)
        assert found, line
        port, token = int(found.group(1)), found.group(2)
        assert len(token) >= 16

        def get(path: str) -> http.client.HTTPResponse:
            deadline = time.monotonic() + 30
            while True:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    conn.request("GET", path)
                    return conn.getresponse()
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, "the server never answered"
                    time.sleep(0.1)

        assert get("/").status == 401
        ok = get(f"/?token={token}")
        assert ok.status == 303 and ok.getheader("set-cookie")
        assert ok.getheader("x-frame-options") == "DENY"
        statuses = [get("/?token=wrong-guess").status for _ in range(11)]
        assert statuses[:10] == [401] * 10 and statuses[10] == 429
    finally:
        proc.terminate()
        proc.wait(timeout=30)
