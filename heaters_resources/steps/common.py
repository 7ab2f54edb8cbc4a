"""What every step shares: a private scratch folder, fetching inputs from the store, the
reason stored in a `*_failed` state, and the error a batch raises when some items failed.

The discipline every step follows is in the package docstring (`heaters_resources.steps`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sqlalchemy import select

from heaters_media.errors import MediaError
from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip
from heaters_resources.errors import HeatersStateError
from heaters_resources.states import leases
from heaters_resources.store.objects import LocalObjectStore, ObjectStore

log = logging.getLogger(__name__)


class StepFailedError(Exception):
    """Some items of a batch step failed; each is in its ``*_failed`` state with the reason."""

    def __init__(self, step: str, failures: dict[str, str]) -> None:
        self.step = step
        self.failures = failures
        listing = "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:5])
        super().__init__(f"{step} failed for {len(failures)} item(s): {listing}")


class ArtifactsFailedError(Exception):
    """A shared decode pass could not make one clip's artifact; the message is the pass's own
    stored reason (already ``kind: message``), kept as it is."""


def discard_unreferenced(db: Database, store: ObjectStore, written: Sequence[str]) -> None:
    """Delete objects a step wrote that no clip row references (a skipped or failed job, a
    clip that took another file, leaves nothing behind). Best effort: an orphan at worst,
    which `heaters doctor` finds."""
    if not written:
        return
    with db.session() as session:
        used = set(session.scalars(select(Clip.storage_key).where(Clip.storage_key.in_(written))))
    try:
        store.delete_many([k for k in written if k not in used])
    except Exception as exc:
        log.warning("could not delete %s: %s", written, exc)


def start_clips(
    clips: Sequence[Clip],
    many: Callable[[list[int]], object],
    one: Callable[[int], object],
    skipped: dict[str, str],
) -> list[Clip]:
    """Start a step for ``clips`` in one transaction (``many``); when the batch is refused (a
    clip moved on meanwhile, a row locked), clip by clip (``one``), each refusal kept in
    ``skipped`` with its reason. Returns the clips started. One transaction instead of one
    per clip: ~4 ms a clip on a laptop's Postgres, a second on a 2-minute video's clips."""
    if not clips:
        return []
    try:
        many([c.id for c in clips])
        return list(clips)
    except HeatersStateError:
        started = []
        for clip in clips:
            try:
                one(clip.id)
                started.append(clip)
            except HeatersStateError as exc:
                skipped[clip.identifier] = str(exc)
        return started


def describe_error(exc: BaseException) -> str:
    """The reason stored in a ``*_failed`` state: the typed kind and the message."""
    if isinstance(exc, ArtifactsFailedError):
        return str(exc)
    if isinstance(exc, MediaError):
        return f"{exc.kind}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


SCRATCH_PREFIX = "heaters-step-"


def _scope() -> str:
    """This host, boot and pid namespace, in a file-name-safe form: only folders made in the
    same scope can be judged by this process table (see `holders.boot_scope`)."""
    holder = leases.process_holder()
    digest = hashlib.sha256(f"{holder.host}/{holder.boot_id}".encode()).hexdigest()[:12]
    return f"{holder.host.replace('~', '_')[:40]}~{digest}"


def _scratch_owner() -> str:
    """``host~scope~pid~start`` of this process: a later step can tell if the owner is gone."""
    holder = leases.process_holder()
    return f"{_scope()}~{holder.pid}~{holder.pid_start}"


def sweep_stale_scratch(base: Path | None, *, dry_run: bool = False) -> list[Path]:
    """Remove scratch folders under ``base`` whose owning process (same host, boot and pid
    namespace) is gone: what a step killed with SIGKILL could not remove itself. Returns what
    was (or, with ``dry_run``, would be) removed."""
    root = Path(base) if base is not None else Path(tempfile.gettempdir())
    scope = _scope()
    removed = []
    try:
        entries = list(root.glob(f"{SCRATCH_PREFIX}*"))
    except OSError:
        return []
    for path in entries:
        parts = path.name[len(SCRATCH_PREFIX) :].split("~")
        if len(parts) < 5 or f"{parts[0]}~{parts[1]}" != scope or not parts[2].isdigit():
            continue  # another host's, container's or boot's: not ours to judge
        pid, start = int(parts[2]), int(parts[3]) if parts[3].isdigit() else 0
        if not leases.pid_alive(pid, start):
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed and not dry_run:
        log.info("removed %d scratch folder(s) of dead steps under %s", len(removed), root)
    return removed


@contextlib.contextmanager
def scratch_dir(base: Path | None) -> Iterator[Path]:
    """A private folder for one step, removed on exit. Its name carries the owner (host, pid,
    start time), so the next step on this host removes it if the owner was killed."""
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    sweep_stale_scratch(base)
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_scratch_owner()}~", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fetch(store: ObjectStore, key: str, workdir: Path) -> Path:
    """A local path holding the object: the file itself for the local store, else a download."""
    if isinstance(store, LocalObjectStore):
        path = store.path(key)
        if path.is_file():
            return path
    target = workdir / key.replace("/", "__")
    store.download_file(key, target)
    return target


def fail_step(
    db: Database, entity: states.Entity, entity_id: int, step: str, exc: BaseException
) -> None:
    try:
        states.mark_failed(db, entity, entity_id, step, describe_error(exc))
    except HeatersStateError as inner:  # already moved on (e.g. a concurrent retry): keep going
        log.warning("could not mark %s %s failed: %s", entity, entity_id, inner)
