"""Local files put into the object store before they are registered (Ray mode).

Why: a run on a Ray cluster may land on any node, and none but this one can read this machine's
disk (heaters_resources/orchestration/ray_mode.py). The key is derived from the content, so the
same file submitted twice is one object.
"""

from __future__ import annotations

from pathlib import Path

from heaters_resources.fingerprint import file_fingerprint
from heaters_resources.settings import Settings


def upload_source(settings: Settings, path: Path, fingerprint: str | None = None) -> str:
    """Upload a local video to the store (``uploads/<content hash>/<name>``): its source.

    ``fingerprint``: the file's :func:`file_fingerprint` when the caller has it already (it
    reads up to 8 MiB of the file)."""
    from heaters_resources.store.objects import object_store_from_settings

    digest = (fingerprint or file_fingerprint(path)).rsplit(":", 1)[-1][:16]
    key = f"uploads/{digest}/{path.name}"
    object_store_from_settings(settings).upload_file(path, key)
    return f"store:{key}"
