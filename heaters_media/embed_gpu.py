"""JPEG decode and preprocessing on a CUDA GPU (torchvision's nvJPEG ``decode_jpeg``), optional.

Why: a 16-core machine decodes 640x360 JPEGs at about 3,000 images/s on its CPUs, a fraction of
what one H100 embeds with CLIP ViT-B/32 in fp16; nvJPEG decodes a batch on the GPU at ~11,000
images/s (bare prototype, issue 13). The CPU workers then only read files.

When: ``decode="auto"`` on a ``cuda`` device with torchvision's ``decode_jpeg`` able to take a
``device`` (torchvision >= 0.19); otherwise the CPU feed (:class:`embed_feed.HostStage`), which
is always correct. The choice is :func:`gpu_decode_choice` (pure, tested on CPU); the stage's
resize/crop/normalize is device-agnostic torch code, tested on the CPU against the Hugging Face
processor with a CPU decoder injected in place of nvJPEG. The nvJPEG call itself has not run
in this project's tests (no GPU in CI).

Parity: the GPU decodes at full size (nvJPEG has no scaled decode) and resizes in float with
the same antialiased filter as PIL, width then height, rounding and clipping to uint8 between
them as PIL does, so pixels stay within two levels of the processor's. Files that are not
JPEGs (PNG...) or carry EXIF go through the CPU path in the workers; a JPEG nvJPEG refuses is
decoded on the CPU, and raises CorruptMediaError naming it when that fails too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from heaters_media.embed_preprocess import Preprocess, jpeg_ends, jpeg_size
from heaters_media.errors import CorruptMediaError, InvalidInputError, MediaError

DECODES = ("auto", "cpu", "gpu")
_EXIF = b"Exif\x00\x00"  # the APP1 segment that may carry an orientation
Decoder = Callable[[list[Any], str], list[Any]]


def torchvision_decoder() -> Decoder | None:
    """torchvision's batched ``decode_jpeg`` bound to RGB output, or None when it cannot run."""
    try:
        import torch
        import torchvision
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError, OSError):  # absent, or built for another torch
        return None
    version = tuple(int(p) for p in torchvision.__version__.split("+")[0].split(".")[:2])
    if version < (0, 19) or not torch.cuda.is_available():  # batched GPU decode: 0.19+
        return None

    def decode(datas: list[Any], device: str) -> list[Any]:
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))

    return decode


def gpu_decode_choice(
    decode: str, device: str, decoder: Decoder | bool | None = True
) -> tuple[bool, str]:
    """``(decode JPEGs on the GPU?, why)`` for a ``decode`` request on ``device``.

    ``decoder``: True probes torchvision (:func:`torchvision_decoder`); tests pass None (not
    available) or a callable. ``decode="gpu"`` that cannot be honoured is an InvalidInputError;
    ``"auto"`` falls back to the CPU feed and says why.
    """
    if decode not in DECODES:
        raise InvalidInputError(f"unknown decode {decode!r}; use one of {', '.join(DECODES)}")
    if decode == "cpu":
        return False, "JPEGs decoded on the CPU (decode=cpu)"
    if not device.startswith("cuda"):
        if decode == "gpu":
            raise InvalidInputError(f"decode=gpu needs a cuda device, not {device}")
        return False, f"JPEGs decoded on the CPU (device {device})"
    found = torchvision_decoder() if decoder is True else decoder
    if found is not None:
        return True, "JPEGs decoded on the GPU (torchvision decode_jpeg)"
    why = "torchvision >= 0.19 with CUDA (decode_jpeg on the GPU) is not importable here"
    if decode == "gpu":
        raise InvalidInputError(f"decode=gpu: {why}")
    return False, f"JPEGs decoded on the CPU: {why}"


class GpuJpegStage:
    """Workers read the bytes; ``finish`` decodes the batch's JPEGs and preprocesses on device.

    One task per batch (``whole_batches``, see :mod:`heaters_media.embed_feed`): reading bytes
    is microseconds per image, the batch's GPU decode is the work.
    """

    whole_batches = True

    def __init__(self, prep: Preprocess, device: str, dtype: Any, decoder: Decoder) -> None:
        import torch

        self.prep, self.device, self.dtype, self.decoder = prep, device, dtype, decoder
        shape = (1, 3, 1, 1)
        self.factor = torch.tensor(prep.factor, dtype=torch.float32).reshape(shape).to(device)
        self.shift = torch.tensor(prep.shift, dtype=torch.float32).reshape(shape).to(device)
        # A side stream: batch i+1 is decoded and resized while the model runs batch i.
        self.side = torch.cuda.Stream(device) if device.startswith("cuda") else None

    def alloc(self, n: int) -> list[Any]:
        return [None] * n

    def work(self, buf: list[Any], row: int, path: Path) -> None:
        """A JPEG's bytes (decoded later on the GPU), or another format's finished crop."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CorruptMediaError(f"unreadable image {path}: {exc}", path=str(path)) from exc
        if not data:
            raise CorruptMediaError(f"empty image file: {path}", path=str(path))
        # nvJPEG does not apply EXIF orientation: such files (never ffmpeg's keyframes) and
        # other formats are finished on the CPU like in the CPU feed.
        # nvJPEG decodes a truncated JPEG without an error (grey where data is missing): one
        # without its end-of-image marker goes to the CPU decoder, which refuses it typed.
        gpu = jpeg_size(data) is not None and _EXIF not in data[:65536] and jpeg_ends(data)
        buf[row] = ("jpeg", data, path) if gpu else ("crop", self.prep.load(path))

    def _decode(
        self, items: list[tuple[int, bytes, Path]]
    ) -> tuple[dict[int, Any], dict[int, Any]]:
        """GPU-decoded CHW uint8 images by row; a failed batch is retried image by image, and an
        image the GPU refuses is decoded on the CPU (a typed error if it fails there too)."""
        import torch

        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for _, d, _ in items]
        try:
            images = self.decoder(tensors, self.device)
            return dict(zip([r for r, _, _ in items], images, strict=True)), {}
        except RuntimeError:
            pass
        out: dict[int, Any] = {}
        cpu: dict[int, Any] = {}
        for (row, _, path), t in zip(items, tensors, strict=True):
            try:
                out[row] = self.decoder([t], self.device)[0]
            except RuntimeError:
                cpu[row] = path
        return out, cpu

    def _resize_crop(self, chw: Any) -> Any:
        """Same-size images (n, 3, h, w) uint8 -> (n, 3, crop_h, crop_w) float, PIL's filter."""
        import torch.nn.functional as F

        h, w = chw.shape[-2:]
        nh, nw = self.prep.resized_size(h, w)
        x = chw.float()
        # PIL resizes the width, rounds and clips to uint8, then the height: the clipping of
        # the cubic's overshoot at sharp edges moves pixels by up to ~13 levels if left out.
        for size in ((h, nw), (nh, nw)):
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode=self.prep.mode, antialias=True)
                x = x.round_().clamp_(0, 255)
        ch, cw = self.prep.crop
        top, left = (nh - ch) // 2, (nw - cw) // 2
        return x[:, :, top : top + ch, left : left + cw]

    def finish(self, buf: list[Any], rows: list[int]) -> tuple[Any, dict[int, MediaError]]:
        """The batch on the device, complete when returned (so no stream hazard downstream)."""
        if self.side is None:
            return self._finish(buf, rows)
        import torch

        with torch.cuda.stream(self.side):
            data, late = self._finish(buf, rows)
            done = torch.cuda.Event()
            done.record(self.side)
        done.synchronize()  # this worker waits; the model's thread does not
        # Made on the side stream, used and freed on the model's: the allocator must not hand
        # its memory to the side stream again before the model's kernels have read it.
        data.record_stream(torch.cuda.default_stream(data.device))
        return data, late

    def _finish(self, buf: list[Any], rows: list[int]) -> tuple[Any, dict[int, MediaError]]:
        import torch

        jpegs = [(r, buf[r][1], buf[r][2]) for r in rows if buf[r][0] == "jpeg"]
        decoded, on_cpu = self._decode(jpegs) if jpegs else ({}, {})
        late: dict[int, MediaError] = {}
        for row, path in on_cpu.items():
            try:
                buf[row] = ("crop", self.prep.load(path))
            except MediaError as exc:
                late[row] = exc
        keep = [r for r in rows if r not in late]
        ch, cw = self.prep.crop
        out = torch.empty((len(keep), 3, ch, cw), dtype=torch.float32, device=self.device)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(keep):
            if buf[r][0] == "crop":  # prepared on the CPU: already resized and cropped
                out[i] = torch.from_numpy(buf[r][1]).permute(2, 0, 1).to(self.device)
            else:
                by_size.setdefault(tuple(decoded[r].shape[-2:]), []).append(i)
        for group in by_size.values():  # one resize call per image size (a video's frames share)
            stacked = torch.stack([decoded[keep[i]] for i in group])
            out[group] = self._resize_crop(stacked)
        out.mul_(self.factor).sub_(self.shift)
        return out.to(self.dtype), late
