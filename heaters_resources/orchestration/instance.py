"""The Dagster instance Heaters runs on: DAGSTER_HOME and its Postgres storage.

The repository's ``dagster.yaml`` is the one instance configuration. It reads the storage URL
from ``HEATERS_DAGSTER_PG_URL``; we point that at a database named ``dagster`` on the same
server as the platform's own tables (embedded PostgreSQL or HEATERS_DATABASE_URL) — a separate
database, because Dagster and our migrations each keep an ``alembic_version`` table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from heaters_resources.db.engine import database_url
from heaters_resources.errors import RunFailedError
from heaters_resources.orchestration.event_log import EVENT_BATCH_SIZE
from heaters_resources.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGSTER_DATABASE = "dagster"


def dagster_storage_url(settings: Settings) -> str:
    """URL of the ``dagster`` database next to the platform database (created if missing)."""
    url = make_url(database_url(settings))
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": DAGSTER_DATABASE}
            )
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{DAGSTER_DATABASE}"'))
    finally:
        admin.dispose()
    # dagster-postgres needs the psycopg2 driver named explicitly (ARCHITECTURE.md, "Pitfalls").
    return url.set(drivername="postgresql+psycopg2", database=DAGSTER_DATABASE).render_as_string(
        hide_password=False
    )


def dagster_home_dir(settings: Settings) -> Path:
    """DAGSTER_HOME: the variable when set, else HEATERS_HOME/dagster."""
    return Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster").resolve()


def prepare_dagster_home(settings: Settings | None = None) -> dict[str, str]:
    """Create DAGSTER_HOME (default HEATERS_HOME/dagster) with our dagster.yaml; return the
    environment every Dagster process (webserver, daemon, CLI, run workers) must get."""
    settings = settings or Settings.from_env()
    chosen = os.environ.get("DAGSTER_HOME")
    home = dagster_home_dir(settings)
    home.mkdir(parents=True, exist_ok=True)
    # Our own folder always gets the current dagster.yaml; a DAGSTER_HOME the user chose keeps
    # the configuration it already has.
    if settings.uses_ray:  # Ray mode: the same file with the Ray run launcher (ray_mode.py)
        from heaters_resources.orchestration.ray_mode import write_instance_yaml

        if not chosen or not (home / "dagster.yaml").exists():
            write_instance_yaml(settings, REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    elif not chosen or not (home / "dagster.yaml").exists():
        shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        HEATERS_HOME=str(Path(settings.home).resolve()),
        HEATERS_DAGSTER_PG_URL=dagster_storage_url(settings),
    )
    # Dagster hands a run's planned events to the event log as one batch only when this is
    # set; our event log (event_log.py) then writes them in one statement.
    env.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
    return env


def dagster_command(*args: str) -> list[str]:
    """The ``dagster`` CLI of this environment."""
    exe = Path(sys.executable).with_name("dagster")
    return [str(exe) if exe.exists() else "dagster", *args]


def run_dagster(args: list[str], env: dict[str, str], log_file: Path) -> None:
    """Run a Dagster CLI command, its output appended to ``log_file``; raise on failure."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as log:
        proc = subprocess.run(
            dagster_command(*args), env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    _raise_for(proc.returncode, args, log_file)


def _raise_for(code: int, args: list[str], log_file: Path) -> None:
    if code != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-15:]
        how = "was killed" if code < 0 else f"failed (exit {code})"
        raise RunFailedError(
            f"dagster {args[0]} {args[1]} {how}; run the same command again to resume. "
            f"Log {log_file}:\n" + "\n".join(tail)
        )


# A Dagster CLI process started before its command is known: Python and Dagster's imports
# (2 s of the 2.5 s a `dagster job execute` with nothing to do takes here) overlap the
# caller's own set-up. It imports the modules it is given (the definitions, then the storage
# classes dagster.yaml names: 0.14 s of the command's instance start otherwise), then reads one
# JSON line {"args": [...], "env": {...}} and runs `dagster ARGS` in that environment; end of
# input without a line: it exits, having run nothing.
# After the command it runs the exit handlers, flushes and leaves with os._exit: the
# interpreter's own teardown of Dagster's heap took ~1 s here and does nothing for the run.
_WARM_CLI = (
    "import importlib, json, os, sys\n"
    "from dagster._cli import main\n"
    "importlib.import_module(sys.argv[1])\n"
    "for name in sys.argv[2:]:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except ImportError:\n"
    "        pass  # only a head start: the command reports what is missing\n"
    "line = sys.stdin.readline()\n"
    "if not line.strip():\n"
    "    sys.exit(0)\n"
    "order = json.loads(line)\n"
    "os.environ.update(order['env'])\n"
    "sys.argv = ['dagster', *order['args']]\n"
    "try:\n"
    "    code = main()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "if isinstance(code, str):\n"
    "    print(code, file=sys.stderr)\n"
    "import atexit\n"
    "atexit._run_exitfuncs()\n"
    "sys.stdout.flush()\n"
    "sys.stderr.flush()\n"
    "os._exit(code if isinstance(code, int) else int(code is not None))\n"
)


def storage_modules(instance_yaml: Path = REPO_ROOT / "dagster.yaml") -> list[str]:
    """The modules of the storage classes an instance file names (for :class:`WarmDagster`
    to import ahead); none when the file cannot be read."""
    import yaml

    try:
        config = yaml.safe_load(instance_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    return [
        v["module"]
        for k, v in config.items()
        if k.endswith("_storage") and isinstance(v, dict) and isinstance(v.get("module"), str)
    ]


class WarmDagster:
    """``dagster ...`` in a process started early (``heaters demo``): it imports Dagster,
    ``module`` (the definitions) and ``preload`` (:func:`storage_modules`) while the caller
    starts Postgres, migrates and registers the video, so the run starts as soon as it is
    asked for. The run is the same Dagster CLI run in its own process as with
    :func:`run_dagster`, its output appended to ``log_file``.
    Use as a context manager: leaving it without :meth:`run` ends the idle process."""

    def __init__(self, module: str, log_file: Path, preload: Sequence[str] = ()) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_file
        self._log = open(log_file, "a")  # noqa: SIM115 (closed in close())
        self._env = dict(os.environ)  # what the process has; run() sends what differs
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WARM_CLI, module, *preload],
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._env,
        )

    def run(self, args: list[str], env: dict[str, str]) -> None:
        """Run ``dagster ARGS`` in environment ``env`` (the variables that differ from the
        process's are sent to it); raise RunFailedError as :func:`run_dagster` does."""
        changed = {k: v for k, v in env.items() if self._env.get(k) != v}
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"args": args, "env": changed}) + "\n")
        self._proc.stdin.close()
        code = self._proc.wait()
        self._log.close()
        _raise_for(code, args, self.log_file)

    def close(self) -> None:
        if self._proc.poll() is None and self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()  # no command: the process exits
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()

    def __enter__(self) -> WarmDagster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
