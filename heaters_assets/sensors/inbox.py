"""Inbox sensors: files dropped in a folder, or objects under a store prefix, become submissions.

They only *register* source videos (state ``new``); the submissions sensor launches the runs, so
every way in (inbox, S3 prefix, ``heaters submit``) follows one path. Registration is idempotent:
the file's identity (path, size, mtime / etag) is stored on the row and checked before creating
one, so a daemon restart between registering and saving the cursor cannot duplicate a video.
"""

import json
import time
from pathlib import Path

import dagster as dg
from sqlalchemy import select

from heaters_resources import states
from heaters_resources.db.models import SourceVideo
from heaters_resources.fingerprint import file_fingerprint
from heaters_resources.inbox import file_away
from heaters_resources.orchestration.resources import (
    DatabaseResource,
    ObjectStoreResource,
    SettingsResource,
)
from heaters_resources.store.uploads import upload_source

VIDEO_SUFFIXES = {
    ".mp4",
    ".mkv",
    ".mov",
    ".webm",
    ".avi",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".flv",
    ".wmv",
    ".3gp",
}


def register_once(
    database: DatabaseResource,
    source: str,
    identity: str,
    title: str,
    fingerprint: str,
    inbox_path: str | None = None,
) -> bool:
    """Create a ``new`` source video for ``identity`` unless one exists, or one holds the same
    content (``fingerprint``: the file dropped in the inbox and given to ``heaters demo`` is one
    video); True if created. ``inbox_path``: the dropped file (filed away once ingested)."""
    db = database.get_database()
    with db.session() as session:
        exists = session.scalar(
            select(SourceVideo.id)
            .where(SourceVideo.info["inbox_identity"].astext == identity)
            .limit(1)
        )
    if exists is not None:
        return False
    info = {"inbox_identity": identity}
    if inbox_path is not None:
        info["inbox_path"] = inbox_path
    _, created = states.register_source_video(
        db, source, fingerprint=fingerprint, title=title, info=info
    )
    return created


@dg.sensor(
    minimum_interval_seconds=10,
    description="Register videos dropped into the inbox folder (HEATERS_HOME/inbox).",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def inbox_sensor(
    context: dg.SensorEvaluationContext, settings: SettingsResource, database: DatabaseResource
) -> dg.SensorResult:
    config = settings.get_settings()
    inbox = Path(config.home) / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    filed = file_away(database.get_database(), inbox)
    for vid, outcome, target in filed:
        context.log.info(f"inbox: video {vid}'s file moved to {outcome}/{target.name}")
    now, added = time.time(), []
    for path in sorted(inbox.iterdir()):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        st = path.stat()
        identity = f"file:{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"
        if seen.get(path.name) == identity or now - st.st_mtime < config.inbox_settle_seconds:
            continue  # already registered, or still being copied in
        local = str(path.resolve())
        fingerprint = file_fingerprint(local)
        # Ray mode: the run may land on a node that cannot see this disk (ray_mode.py)
        source = upload_source(config, path, fingerprint) if config.uses_ray else local
        if register_once(database, source, identity, path.stem, fingerprint, inbox_path=local):
            added.append(path.name)
        seen[path.name] = identity
    seen = {k: v for k, v in seen.items() if (inbox / k).exists()}
    if added:
        context.log.info(f"registered {len(added)} inbox file(s): {', '.join(added)}")
    return dg.SensorResult(
        cursor=json.dumps(seen, sort_keys=True),
        skip_reason=None if added else f"no new files in the inbox ({len(filed)} filed away)",
    )


@dg.sensor(
    minimum_interval_seconds=30,
    description="Register videos put under the store prefix "
    "HEATERS_INBOX_PREFIX (e.g. an S3 'inbox/' prefix); off when it is unset.",
)
def store_inbox_sensor(
    context: dg.SensorEvaluationContext,
    settings: SettingsResource,
    database: DatabaseResource,
    object_store: ObjectStoreResource,
) -> dg.SensorResult:
    prefix = settings.get_settings().inbox_prefix
    if not prefix:
        return dg.SensorResult(skip_reason="HEATERS_INBOX_PREFIX is not set")
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    added = []
    for obj in object_store.get_store().list(prefix):
        if Path(obj.key).suffix.lower() not in VIDEO_SUFFIXES:
            continue
        identity = f"store:{obj.key}:{obj.size}:{obj.last_modified.timestamp():.0f}"
        if seen.get(obj.key) == identity:
            continue
        if register_once(database, f"store:{obj.key}", identity, Path(obj.key).stem, identity):
            added.append(obj.key)
        seen[obj.key] = identity
    return dg.SensorResult(
        cursor=json.dumps(seen, sort_keys=True),
        skip_reason=None if added else "no new objects under the prefix",
    )
