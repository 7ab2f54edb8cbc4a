"""Staging folders that say who owns them, so the leftovers of a killed process can be reclaimed.

A task writes into a private ``.staging-*`` folder and publishes its files at the end; on any
error the folder is removed. A process killed outright (``kill -9``, OOM, reboot) removes
nothing, and a half-finished download can be gigabytes. The folder's name therefore records its
owner, ``.staging-<host>-<pid>-<process start>-<random>``: a later task sweeping the same output
folder removes the folders whose owner is provably gone (same host, and that pid is not running,
or is running but started at another time, i.e. a recycled pid). Folders of other hosts are left
alone (their owner may be alive); unowned ones (the older naming) only once they are a day old.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = ".staging-"
#: An unowned staging folder (named before owners were recorded) untouched this long is stale.
UNOWNED_STALE_SECONDS = 24 * 3600.0
_OWNED_RE = re.compile(r"^\.staging-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-(?P<start>\d+)-[^-]+$")


def _host() -> str:
    """This host's name, reduced to characters that cannot be confused with the separators."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def _start_ticks(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot, from /proc), or 0 where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2) may hold spaces and parentheses: count from its end.
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def owner_tag() -> str:
    """``<host>-<pid>-<process start>`` of the calling process."""
    pid = os.getpid()
    return f"{_host()}-{pid}-{_start_ticks(pid)}"


def _alive(pid: int, start: int) -> bool:
    """Whether process ``pid`` (started at ``start`` ticks, 0: unknown) still runs here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = _start_ticks(pid)
    return not (start and now and now != start)


def is_stale(folder: Path, *, now: float | None = None) -> bool:
    """Whether ``folder`` (a ``.staging-*`` folder) belongs to nobody any more."""
    match = _OWNED_RE.match(folder.name)
    if match is None:
        try:
            age = (time.time() if now is None else now) - folder.stat().st_mtime
        except OSError:
            return False
        return age > UNOWNED_STALE_SECONDS
    if match["host"] != _host():
        return False
    return not _alive(int(match["pid"]), int(match["start"]))


def sweep_stale(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove the stale staging folders directly inside ``out_dir``; returns what was removed.

    Never raises: reclaiming space must not fail the task that does it.
    """
    removed: list[Path] = []
    try:
        candidates = [p for p in Path(out_dir).glob(f"{PREFIX}*") if p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        if is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                log.info("removed the stale staging folder %s", folder)
                removed.append(folder)
    return removed


@contextlib.contextmanager
def owned_staging_dir(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`heaters_media.tools.staging_dir` (a private folder inside ``out_dir``,
    removed with its files when the block ends), named after its owner for :func:`sweep_stale`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{owner_tag()}-", dir=out))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
