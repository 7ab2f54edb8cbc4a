"""The inbox folder's bookkeeping: a dropped file moves on once its video is ingested or failed.

Why: a user who drops files into ``HEATERS_HOME/inbox`` needs to see which were taken and which
were refused without reading the database. Once a video's ingest is over, its file moves to
``inbox/done/`` (a note next to it names the video) or, when the ingest failed,
``inbox/failed/`` (the note gives the reason). The video's ``source`` follows the file, so a
retry of a failed ingest, or a re-ingest with ``overwrite``, still finds it; a failed video
ingested on a retry moves on from ``failed/`` to ``done/``.

In Ray mode the file was uploaded when it was registered (its source is the stored copy), so
only the file moves. Called by ``inbox_sensor`` on every tick: one query (no index) for the
inbox's videos not yet filed.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import or_, select

from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.db.models import SourceVideo

#: Past ingest: the file's content is in the object store.
DONE_STATES = frozenset({"downloaded", "splicing", "spliced", "splicing_failed"})
FAILED_STATES = frozenset({"ingestion_failed"})


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name`` with ``-1``, ``-2``... before its suffix if that is taken."""
    target, stem, suffix, n = folder / name, Path(name).stem, Path(name).suffix, 0
    while target.exists():
        n += 1
        target = folder / f"{stem}-{n}{suffix}"
    return target


def file_away(db: Database, inbox: Path) -> list[tuple[int, str, Path]]:
    """Move the files of inbox videos whose ingest is over; ``(video, "done"|"failed", path)``."""
    filed = SourceVideo.info["inbox_filed"].astext
    with db.session() as s:
        rows = s.execute(
            select(
                SourceVideo.id,
                SourceVideo.state,
                SourceVideo.error,
                SourceVideo.source,
                SourceVideo.info["inbox_path"].astext,
            ).where(
                SourceVideo.info["inbox_path"].astext.is_not(None),
                or_(
                    filed.is_(None) & SourceVideo.state.in_(DONE_STATES | FAILED_STATES),
                    (filed == "failed") & SourceVideo.state.in_(DONE_STATES),
                ),
            )
        ).all()
    moved = []
    for vid, state, error, source, path in rows:
        current = Path(path)
        if not current.is_file():
            continue  # moved or deleted by the user: nothing to file
        outcome = "done" if state in DONE_STATES else "failed"
        folder = inbox / outcome
        folder.mkdir(parents=True, exist_ok=True)
        target = _free_name(folder, current.name)
        os.replace(current, target)
        reason = f"\nreason: {error}" if outcome == "failed" and error else ""
        target.with_name(target.name + ".txt").write_text(f"video {vid}: {state}{reason}\n")
        follows = str(target) if source == str(current) else source
        states.move_source(db, vid, follows, {"inbox_path": str(target), "inbox_filed": outcome})
        moved.append((vid, outcome, target))
    return moved
