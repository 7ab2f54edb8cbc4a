"""Serving clip files and artifacts to the browser straight from the object store.

Local store: the file itself through Starlette's `FileResponse`, which answers `Range` requests
with 206 Partial Content (what `<video>` needs to seek) and `If-Range`/`ETag` correctly.
S3: a redirect to a short-lived presigned URL, so video bytes never pass through this process.
Keys are looked up by row id, never taken from the request.
"""

from __future__ import annotations

import mimetypes

from starlette.responses import FileResponse, RedirectResponse, Response

from heaters_resources.store.objects import LocalObjectStore, ObjectStore

PRESIGN_SECONDS = 3600


def object_response(store: ObjectStore, key: str) -> Response:
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    if isinstance(store, LocalObjectStore):
        path = store.path(key)
        if not path.is_file():
            return Response("object missing from the store", status_code=404)
        return FileResponse(
            path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"}
        )
    return RedirectResponse(
        store.url(key, expires_in=PRESIGN_SECONDS),
        status_code=307,
        headers={"Cache-Control": "no-store"},
    )
