"""What a submitted source *is*, whatever it is called: the key that makes a second
submission of the same video find the first one (`states.register_source_video`).

- a local file: ``sha256:`` of its bytes (the same file under two names, in the inbox and
  given to ``heaters demo``, is one video; a 1 GB file hashes in about a second);
- an http(s) URL: ``url:`` and the URL without its fragment (a page is identified by its
  address; its bytes are unknown until downloaded);
- an object under the inbox prefix of the store: ``store:`` key, size and mtime (hashing
  would mean downloading it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urldefrag

CHUNK = 8 * 1024 * 1024


def file_fingerprint(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def source_fingerprint(source: str) -> str:
    """The fingerprint of a normalized source (an http(s) URL or an absolute file path)."""
    if source.lower().startswith(("http://", "https://")):
        return f"url:{urldefrag(source).url}"
    return file_fingerprint(source)
