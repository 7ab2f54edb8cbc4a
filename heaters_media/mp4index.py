"""Does an MP4/MOV file's sample index point inside the file?

Why: ffprobe trusts the ``moov`` index. A file cut in its last packets (a download that
stopped at 98 %), chunk offsets past the end, or a sample-size table of garbage all probe as
fine, and then fail (or silently lose frames) deep inside a split or a decode. Reading the
index ourselves costs one read of ``moov`` (a few MB for hours of video) and a few vector
operations: every chunk's end (its offset plus the sizes of its samples) must lie inside the
file, and the tables must agree on how many samples there are.

Fragmented files (``moof`` boxes, an ``mvex`` in ``moov``) keep their index elsewhere and are
not checked here; neither are containers other than MP4/MOV.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import numpy as np

#: The most of ``moov`` read into memory (a larger one is left to ffprobe).
MAX_MOOV = 512 * 1024**2


def _boxes(data: bytes | memoryview, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in ``data[start:end]``; stops at a box that
    does not fit (the caller reports what it is missing)."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield bytes(kind), pos + header, pos + size
        pos += size


def _top_level(path: str | os.PathLike[str]) -> tuple[int, int, int, bool] | None:
    """(moov offset, moov size, header size, fragmented) of the file, or None without moov."""
    found = None
    fragmented = False
    with open(path, "rb") as fh:
        total = os.fstat(fh.fileno()).st_size
        pos = 0
        while pos + 8 <= total:
            fh.seek(pos)
            head = fh.read(16)
            if len(head) < 8:
                break
            size, kind = struct.unpack(">I4s", head[:8])
            header = 8
            if size == 1 and len(head) == 16:
                size, header = struct.unpack(">Q", head[8:16])[0], 16
            elif size == 0:
                size = total - pos
            if size < header:
                break
            if kind == b"moov":
                found = (pos, size, header)
            elif kind == b"moof":
                fragmented = True
            pos += size
    return (*found, fragmented) if found else None


def _table(data: memoryview, start: int, end: int, width: int, dtype: str) -> np.ndarray:
    """A full box's entry table: version/flags, a count, then ``count`` entries of ``width``
    bytes; fewer bytes than the count promises is a problem the caller reports."""
    count = struct.unpack_from(">I", data, start + 4)[0]
    first = start + 8
    have = (end - first) // width
    if have < count:
        raise ValueError(f"table promises {count} entries, holds {have}")
    return np.frombuffer(data[first : first + count * width], dtype=dtype)


def _track_end(data: memoryview, stbl: tuple[int, int], total: int) -> tuple[int, int] | None:
    """(the end of the track's last sample data, its sample count), None without a chunk
    table. Raises ValueError for tables that contradict each other or the file's size (checked
    before anything is allocated: a garbage count must not become a 32 GB array)."""
    tables = {kind: (a, b) for kind, a, b in _boxes(data, *stbl)}
    offsets_box = tables.get(b"stco") or tables.get(b"co64")
    if offsets_box is None or b"stsz" not in tables or b"stsc" not in tables:
        return None
    if b"stco" in tables:
        offsets = _table(data, *tables[b"stco"], 4, ">u4").astype(np.int64)
    else:
        offsets = _table(data, *tables[b"co64"], 8, ">u8").astype(np.int64)
    start, end = tables[b"stsz"]
    fixed, count = struct.unpack_from(">II", data, start + 4)
    if count > total or fixed * count > total:
        raise ValueError(
            f"the sample size table describes {count} samples"
            + (f" of {fixed} bytes" if fixed else "")
            + f": more than a {total}-byte file holds"
        )
    runs = _table(data, *tables[b"stsc"], 12, ">u4").reshape(-1, 3).astype(np.int64)
    chunks = len(offsets)
    if chunks == 0 or count == 0:
        return (0, 0) if chunks == count == 0 else None
    if len(runs) == 0 or runs[0, 0] != 1 or np.any(np.diff(runs[:, 0]) <= 0):
        raise ValueError("sample-to-chunk table is out of order")
    # Samples in each chunk: a run applies from its first chunk to the next run's.
    firsts = np.minimum(runs[:, 0] - 1, chunks)
    lengths = np.diff(np.append(firsts, chunks))
    per_chunk = np.repeat(runs[:, 1], np.maximum(lengths, 0))
    if int(per_chunk.sum()) != count:
        raise ValueError(f"chunks hold {int(per_chunk.sum())} samples, the size table {count}")
    if fixed:
        sizes = np.full(count, fixed, dtype=np.int64)
    else:
        have = (end - start - 12) // 4
        if have < count:
            raise ValueError(f"sample size table promises {count} entries, holds {have}")
        sizes = np.frombuffer(data[start + 12 : start + 12 + 4 * count], ">u4").astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(per_chunk)[:-1]))
    chunk_bytes = np.add.reduceat(sizes, np.minimum(starts, count - 1))
    chunk_bytes[per_chunk == 0] = 0
    return int((offsets + chunk_bytes).max()), int(count)


def sample_index_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with an MP4/MOV file's sample index, in words (None when it holds)."""
    try:
        top = _top_level(path)
        if top is None:
            return None  # no moov at all: ffprobe says so itself
        offset, size, header, fragmented = top
        total = os.path.getsize(path)
        if offset + size > total:
            return f"the index (moov) runs past the end of the file ({offset + size} > {total})"
        if fragmented or size > MAX_MOOV:
            return None
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = memoryview(fh.read(size))
        moov = list(_boxes(data, header, size))
        if any(kind == b"mvex" for kind, _, _ in moov):
            return None  # fragmented: the samples are indexed in the fragments
        for n, (kind, a, b) in enumerate(moov):
            if kind != b"trak":
                continue
            stbl = _find(data, a, b, [b"mdia", b"minf", b"stbl"])
            if stbl is None:
                continue
            try:
                found = _track_end(data, stbl, total)
            except (ValueError, struct.error) as exc:
                return f"track {n}: {exc}"
            if found and found[0] > total:
                return (
                    f"track {n}: its {found[1]} samples run to byte {found[0]} of a "
                    f"{total}-byte file (cut short, or a damaged index)"
                )
    except OSError:
        return None  # unreadable: the caller's own open reports it
    return None


def _find(data: memoryview, start: int, end: int, path: list[bytes]) -> tuple[int, int] | None:
    """The payload span of the box at ``path`` below ``data[start:end]``."""
    for kind, a, b in _boxes(data, start, end):
        if kind == path[0]:
            return (a, b) if len(path) == 1 else _find(data, a, b, path[1:])
    return None


def video_sample_count(path: str | os.PathLike[str]) -> int | None:
    """How many samples (frames) the first video track of an MP4/MOV file indexes.

    Why: checking a clip's frame count by ffprobe costs a process per clip; a file we just
    wrote can be counted from its own index instead. None when the file has no readable,
    unfragmented ``moov`` or no video track.
    """
    try:
        top = _top_level(path)
        if top is None or top[3] or top[1] > MAX_MOOV:
            return None
        offset, size, header, _ = top
        total = os.path.getsize(path)
        if offset + size > total:
            return None
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = memoryview(fh.read(size))
        for kind, a, b in _boxes(data, header, size):
            if kind != b"trak":
                continue
            hdlr = _find(data, a, b, [b"mdia", b"hdlr"])
            if hdlr is None or bytes(data[hdlr[0] + 8 : hdlr[0] + 12]) != b"vide":
                continue
            stbl = _find(data, a, b, [b"mdia", b"minf", b"stbl"])
            found = _track_end(data, stbl, total) if stbl is not None else None
            return found[1] if found else None
    except (OSError, ValueError, struct.error):
        return None
    return None
