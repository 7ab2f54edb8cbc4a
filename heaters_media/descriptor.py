"""``heaters/pixels-v1``: a weights-free image descriptor, and the image decoding all models share.

Why it exists: a machine with no CLIP/DINOv2 weights (CI, a laptop offline, a first install)
still needs *some* embedding so that the pipeline, the pgvector index and "similar clips" work
end to end. This descriptor is an honest, small colour-layout signature in the spirit of MPEG-7's
Colour Layout Descriptor, not a semantic model, and it is never labelled as CLIP:

1. decode with OpenCV (no Pillow, no torch), downscale to a ``GRID`` x ``GRID`` thumbnail with
   area averaging (aspect ratio is deliberately squashed: it is a layout, not a shape),
2. convert to YCbCr (luma separated from colour, close to how people judge colour differences)
   and centre the values on mid-grey (subtract 128), so a neutral image is the origin rather
   than a large positive offset that would make every pair of images look alike under cosine,
3. 2D DCT of each channel; keep the low-frequency block (``LUMA_BLOCK`` x ``LUMA_BLOCK`` of Y,
   ``CHROMA_BLOCK`` x ``CHROMA_BLOCK`` of Cb and of Cr) — the coarse layout of brightness and
   colour, which survives re-encoding and rescaling while fine texture does not,
4. concatenate (Y, Cb, Cr, each block row-major) and L2-normalize.

``DIMENSION`` = 8*8 + 2*4*4 = 96, fixed. A flat mid-grey image (all coefficients zero) maps to
the luma-DC axis so that every output has unit norm.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from heaters_media.errors import CorruptMediaError
from heaters_media.tools import existing_file

NAME = "heaters/pixels-v1"
GRID = 16
LUMA_BLOCK = 8
CHROMA_BLOCK = 4
DIMENSION = LUMA_BLOCK * LUMA_BLOCK + 2 * CHROMA_BLOCK * CHROMA_BLOCK


def read_image_bgr(path: str | os.PathLike[str], *, min_side: int | None = None) -> np.ndarray:
    """Decode an image file to a uint8 BGR array (h, w, 3), or raise CorruptMediaError naming it.

    ``min_side`` lets callers that only need a thumbnail decode JPEGs at 1/8 scale (libjpeg
    scales inside its DCT, several times faster than a full decode); when that would be smaller
    than ``min_side`` the file is decoded at full size instead. EXIF orientation is applied.
    """
    p = existing_file(path)
    buf = np.fromfile(p, dtype=np.uint8)
    if buf.size == 0:
        raise CorruptMediaError(f"empty image file: {p}", path=str(p))
    flags = [cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_COLOR] if min_side else [cv2.IMREAD_COLOR]
    img = None
    for flag in flags:
        try:
            img = cv2.imdecode(buf, flag)
        except cv2.error as exc:
            raise CorruptMediaError(f"cannot decode image {p}: {exc}", path=str(p)) from exc
        if img is None:
            break
        if min_side is None or min(img.shape[:2]) >= min_side:
            break
    if img is None or img.size == 0:
        raise CorruptMediaError(f"not a decodable image: {p}", path=str(p))
    return img


def read_image_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Full-size uint8 RGB array, the layout the transformers image processors expect."""
    return cv2.cvtColor(read_image_bgr(path), cv2.COLOR_BGR2RGB)


def describe(bgr: np.ndarray) -> np.ndarray:
    """The ``DIMENSION``-long float32 unit vector of one decoded BGR image."""
    small = cv2.resize(bgr, (GRID, GRID), interpolation=cv2.INTER_AREA)
    ycrcb = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb).astype(np.float32) - 128.0
    y, cr, cb = (np.ascontiguousarray(ycrcb[:, :, i]) for i in range(3))
    parts = [cv2.dct(y)[:LUMA_BLOCK, :LUMA_BLOCK]]
    parts += [cv2.dct(c)[:CHROMA_BLOCK, :CHROMA_BLOCK] for c in (cb, cr)]
    vec = np.concatenate([p.ravel() for p in parts]).astype(np.float32)
    norm = float(np.linalg.norm(vec))
    if norm < 1e-6:
        vec = np.zeros(DIMENSION, dtype=np.float32)
        vec[0] = 1.0
        return vec
    return vec / norm


def describe_file(path: str | os.PathLike[str] | Path) -> np.ndarray:
    """Decode (at reduced size when the file is large enough) and describe one image file."""
    return describe(read_image_bgr(path, min_side=2 * GRID))
