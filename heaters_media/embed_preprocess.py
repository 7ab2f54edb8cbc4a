"""A model's Hugging Face image processor, redone as per-image array operations for the feed.

Why not call the processor: CLIPImageProcessor and DINOv2's BitImageProcessor (the PIL backend
that transformers picks without torchvision) resize one image at a time through PIL while
holding the GIL, 3-5 ms per 640x360 frame: with a single-threaded decode in front, that capped
every embedding run at 113-141 images/s on 2 cores, CPU or GPU. Here each image is one call that
releases the GIL almost throughout (OpenCV's libjpeg-turbo decode, torch's resize, numpy's
normalize), so a pool of threads (:mod:`heaters_media.embed_feed`) scales with cores.

What is reproduced, read from the processor's own settings (never hard-coded per model):

1. resize so the shortest edge is ``size["shortest_edge"]``, the long edge
   ``int(shortest * long / short)`` (transformers' rule), with PIL's filter: torch's
   ``interpolate(..., antialias=True)`` on uint8 is a port of PIL's resampling (cubic a=-0.5,
   support widened by the reduction factor, rounded to uint8), within 1 of PIL's values;
2. centre crop with transformers' offsets (``(size - crop) // 2``);
3. rescale and normalize fused: ``x * factor / std - mean / std`` in float32.

Decode: a JPEG whose header says it is large enough is decoded at 1/2, 1/4 or 1/8 size inside
libjpeg (scaled IDCT, several times cheaper than a full decode) when the reduced image's short
side is still ``REDUCED_MARGIN`` (2) times the resize target, and then resized with the
full-size image's geometry. Why the margin: libjpeg's reduction is a per-8x8-block low-pass,
and the bicubic that follows must still span a few reduced pixels to smooth its block edges.
Measured against the processor on the full-size decode (tests/media/test_embed_feed.py): at 1x
text-like edges move by up to 31 levels (mean 2.5-6.5), at 2x by up to 10 (mean <= 1.0), a few
pixels on saturated colour edges by up to 21 (chroma is upsampled differently), embeddings
cosine >= 0.9999; white noise is the worst case (mean 1-3 levels at 2x). A processor with
settings outside this list raises :class:`UnsupportedProcessor`; the caller then keeps the
processor itself (correct, slower).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from heaters_media.errors import CorruptMediaError

#: PIL resampling codes -> torch interpolate modes that port the same antialiased filter.
_MODES = {2: "bilinear", 3: "bicubic"}
#: libjpeg's scaled decodes, largest reduction first: (factor, OpenCV flag giving RGB). The
#: REDUCED_COLOR flags carry the BGR bit, which OpenCV refuses next to COLOR_RGB: swap it.
_REDUCED = tuple(
    (k, (flag & ~cv2.IMREAD_COLOR_BGR) | cv2.IMREAD_COLOR_RGB)
    for k, flag in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    )
)
_NUDGE = 1 + 1e-9
#: A JPEG is decoded reduced only when its reduced short side is this many times the target.
REDUCED_MARGIN = 2.0
#: Start-of-frame markers (baseline, extended, progressive, lossless...; not DHT/JPG/DAC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class UnsupportedProcessor(ValueError):
    """The processor does something this module does not reproduce (the reason says what)."""


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from a JPEG's start-of-frame header, or None (not a JPEG / no SOF).

    Reads only the markers before the image data, so choosing a decode scale costs microseconds.
    """
    if data[:2] != b"\xff\xd8":
        return None
    i, end = 2, len(data)
    while i + 9 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return (height, width) if height and width else None
        if marker == 0xDA:  # start of scan before any frame header: malformed
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def jpeg_ends(data: bytes) -> bool:
    """The bytes end with a JPEG end-of-image marker (trailing zero padding allowed).

    Decoders fill a JPEG cut short with grey and report its full size; this tells such a file
    from a whole one without decoding it.
    """
    return data.rstrip(b"\0")[-2:] == b"\xff\xd9"


def reduction(height: int, width: int, min_short: int) -> int:
    """The largest libjpeg reduction (8, 4, 2, else 1) whose short side stays >= ``min_short``."""
    short = min(height, width)
    for factor, _ in _REDUCED:
        if -(-short // factor) >= min_short:  # libjpeg rounds scaled sizes up
            return factor
    return 1


@dataclass(frozen=True)
class Decoded:
    """A decoded image and the full size it stands for (the same unless reduced by libjpeg).

    ``height``/``width`` are the full-size image's, in the decoded orientation: the resize
    target is computed from them, as the processor computes it from the full-size decode.
    """

    rgb: Any  # uint8 (h, w, 3)
    height: int
    width: int
    factor: int = 1


def decode_rgb(data: bytes, path: str | os.PathLike[str], min_short: int | None = None) -> Decoded:
    """Decode image bytes to uint8 RGB; CorruptMediaError naming ``path``.

    With ``min_short``, a JPEG is decoded at the largest reduction that keeps its short side at
    least ``min_short`` (see the module docstring). EXIF orientation is applied, as
    :func:`heaters_media.descriptor.read_image_bgr` does.
    """
    if not data:
        raise CorruptMediaError(f"empty image file: {path}", path=str(path))
    size = jpeg_size(data) if min_short else None
    factor = reduction(*size, min_short) if size is not None and min_short else 1
    flag = next((f for k, f in _REDUCED if k == factor), cv2.IMREAD_COLOR_RGB)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    except cv2.error as exc:
        raise CorruptMediaError(f"cannot decode image {path}: {exc}", path=str(path)) from exc
    if img is None or img.size == 0:
        raise CorruptMediaError(f"not a decodable image: {path}", path=str(path))
    h, w = img.shape[:2]
    if factor == 1 or size is None:
        return Decoded(img, h, w)
    full_h, full_w = size
    if (h, w) == (-(-full_w // factor), -(-full_h // factor)):  # EXIF turned it 90 degrees
        full_h, full_w = full_w, full_h
    elif (h, w) != (-(-full_h // factor), -(-full_w // factor)):
        return Decoded(img, h * factor, w * factor, factor)  # header and data disagree
    return Decoded(img, full_h, full_w, factor)


def _field(obj: Any, key: str) -> Any:
    """A key of a transformers size (a dict in old versions, a SizeDict in 5.x)."""
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _mode(resample: Any) -> str | None:
    code = getattr(resample, "value", resample)
    if isinstance(code, int):
        return _MODES.get(code)
    name = str(code).lower()
    return next((m for m in _MODES.values() if m in name), None)


@dataclass(frozen=True)
class Preprocess:
    """What a processor does to one image, as numbers (see the module docstring)."""

    shortest_edge: int
    crop: tuple[int, int]  # (height, width)
    mode: str  # torch interpolate mode: bicubic | bilinear
    factor: tuple[float, float, float]  # per RGB channel: rescale / std
    shift: tuple[float, float, float]  # per RGB channel: mean / std
    reduced_decode: bool = True

    @classmethod
    def from_processor(cls, processor: Any, *, reduced_decode: bool = True) -> Preprocess:
        """Read a transformers image processor; UnsupportedProcessor when it does more."""

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise UnsupportedProcessor(f"{type(processor).__name__}: {what}")

        need(bool(getattr(processor, "do_resize", False)), "no resize")
        size, crop = getattr(processor, "size", None), getattr(processor, "crop_size", None)
        short = _positive(_field(size, "shortest_edge") if size is not None else None)
        need(short > 0, f"size {size} is not a shortest edge")
        need(not _field(size, "longest_edge"), "a longest_edge cap")
        need(bool(getattr(processor, "do_center_crop", False)), "no centre crop")
        ch = _positive(_field(crop, "height") if crop is not None else None)
        cw = _positive(_field(crop, "width") if crop is not None else None)
        need(0 < ch <= short and 0 < cw <= short, f"crop {crop} not within the resize {size}")
        mode = _mode(getattr(processor, "resample", None))
        need(mode is not None, f"resample {getattr(processor, 'resample', None)!r}")
        need(not getattr(processor, "do_pad", None), "padding")
        rescale = float(processor.rescale_factor) if processor.do_rescale else 1.0
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if processor.do_normalize:
            mean = _triple(processor.image_mean)
            std = _triple(processor.image_std)
        factor = (rescale / std[0], rescale / std[1], rescale / std[2])
        shift = (mean[0] / std[0], mean[1] / std[1], mean[2] / std[2])
        return cls(short, (ch, cw), str(mode), factor, shift, reduced_decode)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' ``get_resize_output_image_size(default_to_square=False)``."""
        if width <= height:
            return int(self.shortest_edge * height / width), self.shortest_edge
        return self.shortest_edge, int(self.shortest_edge * width / height)

    def load(self, path: str | os.PathLike[str]) -> Any:
        """Read, decode and resize + crop one file: a uint8 RGB (crop_h, crop_w, 3) array.

        CorruptMediaError (naming the file) for anything that cannot be read or decoded.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CorruptMediaError(f"unreadable image {path}: {exc}", path=str(path)) from exc
        min_short = math.ceil(self.shortest_edge * REDUCED_MARGIN) if self.reduced_decode else None
        return self.resize_crop(decode_rgb(data, path, min_short))

    def resize_crop(self, image: Decoded | Any) -> Any:
        """Resize (PIL's filter, uint8) and centre-crop one image: a (crop_h, crop_w, 3) array.

        ``image``: a :class:`Decoded`, or a full-size uint8 RGB (h, w, 3) array. A reduced
        decode is resized with the scale of the full-size image (its last row and column stand
        for a partial block of 2-8 pixels), so the geometry is the processor's to the pixel.
        """
        import torch
        import torch.nn.functional as F

        if not isinstance(image, Decoded):
            image = Decoded(image, *image.shape[:2])
        rgb, k = image.rgb, image.factor
        nh, nw = self.resized_size(image.height, image.width)
        if (nh, nw) != rgb.shape[:2]:
            x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
            if k == 1:
                y = F.interpolate(x, size=(nh, nw), mode=self.mode, antialias=True)
            else:  # the nudge keeps float error from flooring the output a row short
                scale = (nh * k / image.height * _NUDGE, nw * k / image.width * _NUDGE)
                y = F.interpolate(
                    x,
                    scale_factor=scale,
                    mode=self.mode,
                    antialias=True,
                    recompute_scale_factor=False,
                )
            rgb = y[0].permute(1, 2, 0).numpy()
        ch, cw = self.crop
        top, left = (nh - ch) // 2, (nw - cw) // 2
        return rgb[top : top + ch, left : left + cw]

    def normalize_into(self, crop: Any, out: Any) -> None:
        """Write ``crop`` (uint8 HWC RGB) normalized into ``out`` (float32 CHW numpy view)."""
        chw = crop.transpose(2, 0, 1)
        np.multiply(chw, np.asarray(self.factor, np.float32)[:, None, None], out=out)
        out -= np.asarray(self.shift, np.float32)[:, None, None]


def _positive(value: Any) -> int:
    """An int setting, or 0 when absent or not an int (the caller then refuses it)."""
    return value if isinstance(value, int) and value > 0 else 0


def _triple(values: Any) -> tuple[float, float, float]:
    v = [float(x) for x in (values if isinstance(values, list | tuple) else [values] * 3)]
    if len(v) != 3:
        raise UnsupportedProcessor(f"{len(v)} channel statistics (expected RGB)")
    return v[0], v[1], v[2]
