"""The embedded default database: a real PostgreSQL + pgvector from the `pgserver` wheel.

One server per HEATERS_HOME, shared by every process (CLI, Dagster webserver, daemon, run workers):

- `ensure_server(home)` takes an exclusive fcntl lock on `<home>/pgserver.lock`, reuses a server
  whose `postmaster.pid` names a live, ready postmaster, and otherwise starts one. Concurrent
  starters therefore serialize on the lock and all but the first simply reuse the server.
- The server is started with pgserver's `cleanup_mode=None`, so it is not stopped when the
  starting process exits (pg_ctl daemonizes the postmaster in its own session).
- As root, pgserver runs postgres as the system user `pgserver`; `pg_ctl stop` from root is refused,
  so `stop_server` signals the postmaster pid directly (SIGINT = fast shutdown).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "pgserver.lock"
PGDATA_NAME = "pgdata"


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server: its SQLAlchemy URL, postmaster pid and whether we started it."""

    url: str
    pid: int
    pgdata: Path
    started: bool


@contextlib.contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_NAME, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_running(pgdata: Path) -> tuple[int, Path] | None:
    """(pid, socket dir) of a live and ready postmaster in `pgdata`, read from postmaster.pid."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    try:
        pid = int(lines[0].strip())
    except ValueError:
        return None
    socket_dir = Path(lines[4].strip()) if lines[4].strip() else None
    if socket_dir is None or not _pid_alive(pid):
        return None
    port = lines[3].strip() or "5432"
    if not (socket_dir / f".s.PGSQL.{port}").exists():
        return None
    return pid, socket_dir


def server_url(socket_dir: Path, database: str = "postgres") -> str:
    """psycopg2 URL for a Unix-socket server (the driver is always named explicitly)."""
    return f"postgresql+psycopg2://postgres:@/{database}?host={socket_dir}"


def running_server(home: Path) -> EmbeddedServer | None:
    """The server already running for `home`, or None; never starts one."""
    pgdata = Path(home).resolve() / PGDATA_NAME
    found = _read_running(pgdata)
    if found is None:
        return None
    return EmbeddedServer(url=server_url(found[1]), pid=found[0], pgdata=pgdata, started=False)


def ensure_server(home: Path | str) -> EmbeddedServer:
    """Return the embedded server for `home`, starting it (once, under a file lock) if needed."""
    home = Path(home).expanduser().resolve()
    pgdata = home / PGDATA_NAME
    with _home_lock(home):
        existing = running_server(home)
        if existing is not None:
            return existing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver

            # pgserver caches handles per process; a cached one may describe a stopped server.
            pgserver.PostgresServer._instances.pop(pgdata, None)
            server = pgserver.get_server(pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
        socket_dir = info.socket_dir if info.socket_dir is not None else pgdata
        return EmbeddedServer(
            url=server_url(Path(socket_dir)), pid=int(info.pid), pgdata=pgdata, started=True
        )


def stop_server(home: Path | str, timeout: float = 20.0) -> bool:
    """Fast-shutdown the embedded server of `home`; True if one was running."""
    home = Path(home).expanduser().resolve()
    with _home_lock(home):
        existing = running_server(home)
        if existing is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(existing.pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while _pid_alive(existing.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return True
