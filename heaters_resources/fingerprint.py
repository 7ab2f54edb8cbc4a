"""What a submitted source *is*, whatever it is called: the key that makes a second
submission of the same video find the first one (`states.register_source_video`).

- a local file: ``sha256-ends:`` a SHA-256 of its size, its first and its last 4 MiB (the
  same file under two names, in the inbox and given to ``heaters demo``, is one video). Not
  the whole file: the inbox sensor fingerprints every new file inside one tick, and a 50 GB
  file would take minutes. A video's ends hold its index (moov, which lists the size of every
  sample) and its last packets, so two different videos of equal size and equal ends do not
  happen in practice;
- an http(s) URL: ``url:`` and the URL without its fragment (a page is identified by its
  address; its bytes are unknown until downloaded);
- an object under the inbox prefix of the store: ``store:`` key, size and mtime (hashing
  would mean downloading it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urldefrag

ENDS = 4 * 1024 * 1024  # bytes read from each end of a file


def file_fingerprint(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(str(size).encode() + b"\n")
        digest.update(f.read(ENDS))
        if size > ENDS:
            f.seek(max(ENDS, size - ENDS))
            digest.update(f.read(ENDS))
    return f"sha256-ends:{digest.hexdigest()}"


def source_fingerprint(source: str) -> str:
    """The fingerprint of a normalized source (an http(s) URL or an absolute file path)."""
    if source.lower().startswith(("http://", "https://")):
        return f"url:{urldefrag(source).url}"
    return file_fingerprint(source)
