"""Which embedding model a name means, and loading/running CLIP and DINOv2 through transformers.

Why a separate module: ``embed.py`` stays about strategies and results, while everything that
touches torch/transformers lives here and is imported lazily, so the weights-free descriptor
(and the rest of heaters_media) works on machines without the ``ml`` extra.

Weights come from ``from_pretrained``: the Hugging Face cache for a hub id, or a folder written
by ``save_pretrained`` (``model_path``, or the model name itself being a folder). The local
cache is always tried first; the network is only tried when not offline, so an offline machine
fails fast with a message that says how to get the weights. Loaded models are cached per
process (:func:`load_model`), keyed on the weights' source, device and dtype.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from heaters_media import descriptor
from heaters_media.errors import InvalidInputError, ToolFailedError

Family = Literal["clip", "dinov2", "descriptor"]

CLIP_MODELS = (
    "openai/clip-vit-base-patch32",
    "openai/clip-vit-base-patch16",
    "openai/clip-vit-large-patch14",
    "openai/clip-vit-large-patch14-336",
)
DINOV2_MODELS = (
    "facebook/dinov2-small",
    "facebook/dinov2-base",
    "facebook/dinov2-large",
    "facebook/dinov2-giant",
)
KNOWN_MODELS: dict[str, Family] = {
    **dict.fromkeys(CLIP_MODELS, "clip"),
    **dict.fromkeys(DINOV2_MODELS, "dinov2"),
    descriptor.NAME: "descriptor",
}
_MODEL_TYPES: dict[str, Family] = {"clip": "clip", "dinov2": "dinov2"}
DEVICES = ("auto", "cpu", "cuda", "mps")
_TRUE = {"1", "true", "yes", "on"}
_LOAD_LOCK = threading.Lock()


class ModelWeightsNotFoundError(InvalidInputError):
    """A known model whose weights are neither in the Hugging Face cache nor at the given path."""

    kind = "model_not_found"


@dataclass(frozen=True)
class ModelSpec:
    """What a model name resolved to: a label, a family and where its weights come from."""

    name: str
    family: Family
    source: str
    local_dir: bool


def env_offline() -> bool:
    """True when the environment forbids downloads (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _family_of_dir(folder: Path) -> Family:
    config = folder / "config.json"
    if not config.is_file():
        raise InvalidInputError(
            f"model folder {folder} has no config.json (expected a save_pretrained folder)",
            path=str(folder),
        )
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"unreadable model config {config}: {exc}") from exc
    if model_type not in _MODEL_TYPES:
        raise InvalidInputError(
            f"model folder {folder} holds a {model_type!r} model; only clip and dinov2 "
            "image models are supported",
            model_type=model_type,
        )
    return _MODEL_TYPES[model_type]


def resolve_model(model: str, model_path: str | os.PathLike[str] | None = None) -> ModelSpec:
    """Turn a model name (+ optional weights folder) into a :class:`ModelSpec`, or raise.

    Pure Python: an unknown name fails the same way whether or not torch is installed.
    """
    if model == descriptor.NAME:
        if model_path is not None:
            raise InvalidInputError(f"{descriptor.NAME} has no weights; drop --model-path")
        return ModelSpec(model, "descriptor", model, False)
    if model_path is not None:
        folder = Path(model_path).expanduser()
        if not folder.is_dir():
            raise InvalidInputError(f"model path is not a folder: {folder}", path=str(folder))
        return ModelSpec(model, _family_of_dir(folder), str(folder.resolve()), True)
    as_dir = Path(model).expanduser()
    if as_dir.is_dir():
        return ModelSpec(model, _family_of_dir(as_dir), str(as_dir.resolve()), True)
    if model in KNOWN_MODELS:
        return ModelSpec(model, KNOWN_MODELS[model], model, False)
    raise InvalidInputError(
        f"unknown embedding model {model!r}; known: {', '.join(KNOWN_MODELS)}, "
        "or a local folder written by save_pretrained",
        model=model,
    )


def quiet_openmp() -> None:
    """Let torch's OpenMP threads sleep between parallel regions, unless the environment says.

    Why: libgomp's default wait policy keeps the model's intra-op threads spinning after every
    forward pass, on the cores the embedding feed's workers need until the next one. Measured
    on 2 cores (tiny model end to end, load ~6): 200-570 images/s spinning, 1,190-1,200 with
    ``OMP_WAIT_POLICY=PASSIVE``; ViT-B/32's forward pass did not get slower. libgomp reads the
    variable once, when torch is first imported: after that this does nothing.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def import_ml() -> tuple[Any, Any]:
    """``(torch, transformers)``, or a ToolFailedError saying how to install them."""
    quiet_openmp()
    try:
        import PIL  # noqa: F401  (the image processors resize with Pillow)
        import torch
        import transformers
    except ImportError as exc:
        raise ToolFailedError(
            f"CLIP/DINOv2 embeddings need torch, transformers and Pillow ({exc}); "
            "install them with: pip install -e '.[ml]'  (or use the weights-free model "
            f"{descriptor.NAME})"
        ) from exc
    return torch, transformers


def check_device(device: str) -> str:
    """The device's kind (``cuda:1`` -> ``cuda``), or InvalidInputError; no torch needed."""
    base = device.split(":", 1)[0]
    if base not in DEVICES:
        raise InvalidInputError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    return base


def resolve_device(device: str) -> tuple[str, str]:
    """``(device, dtype)``: auto picks cuda, then mps, then cpu; float16 on CUDA only."""
    base = check_device(device)
    torch, _ = import_ml()
    if base == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    elif base == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device cuda requested but torch sees no CUDA GPU")
    elif base == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError("device mps requested but torch has no MPS backend here")
    return device, ("float16" if device.startswith("cuda") else "float32")


def _weights_error(spec: ModelSpec, what: str, exc: BaseException) -> ModelWeightsNotFoundError:
    if spec.local_dir:
        how = f"the folder {spec.source} lacks {what} files (write it with save_pretrained)"
    else:
        how = (
            f"{what} for {spec.source} are not in the Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}); on a machine with "
            f"internet run `hf download {spec.source}` and copy the cache (HF_HOME) here, "
            "or pass --model-path DIR with a folder written by save_pretrained"
        )
    return ModelWeightsNotFoundError(
        f"embedding model {spec.name!r} not available: {how} ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''})",
        model=spec.name,
        source=spec.source,
    )


def _from_pretrained(cls: Any, spec: ModelSpec, offline: bool, what: str) -> Any:
    """Cache/folder first; the network only when allowed. Any miss -> ModelWeightsNotFoundError."""
    try:
        return cls.from_pretrained(spec.source, local_files_only=True)
    except (OSError, ValueError) as exc:
        if offline or spec.local_dir:
            raise _weights_error(spec, what, exc) from exc
    try:
        return cls.from_pretrained(spec.source)
    except (OSError, ValueError) as exc:
        raise _weights_error(spec, what, exc) from exc


@dataclass
class LoadedModel:
    """A model ready to run: the torch module, its image processor and what it outputs."""

    spec: ModelSpec
    model: Any
    processor: Any
    dimension: int
    device: str
    dtype: str

    def embed_rgb(self, images: list[np.ndarray]) -> np.ndarray:
        """L2-normalized float32 vectors (n, dimension) of RGB uint8 arrays."""
        inputs = self.processor(images=images, return_tensors="pt")
        return self.embed_pixels(inputs["pixel_values"])

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        """L2-normalized float32 vectors of preprocessed pixel values (n, 3, h, w)."""
        torch, _ = import_ml()
        pixels = pixels.to(self.model.device, dtype=self.model.dtype)
        with torch.inference_mode():
            if self.spec.family == "clip":
                out = self.model.get_image_features(pixel_values=pixels)
            else:  # DINOv2: pooler_output = the CLS token after the final layer norm
                out = self.model(pixel_values=pixels)
        return _normalized(out)

    def embed_tokens(self, tokens: dict[str, Any]) -> np.ndarray:
        """L2-normalized CLIP text vectors of a tokenizer's output."""
        torch, _ = import_ml()
        keep = ("input_ids", "attention_mask")
        batch = {k: v.to(self.model.device) for k, v in tokens.items() if k in keep}
        with torch.inference_mode():
            out = self.model.get_text_features(**batch)
        return _normalized(out)


def _normalized(out: Any) -> np.ndarray:
    """Features as float32 numpy rows of unit length (transformers 5 returns output objects)."""
    import torch

    if not isinstance(out, torch.Tensor):
        out = out.pooler_output
    feats = out.float()
    feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return feats.cpu().numpy().astype(np.float32)


def load_model(spec: ModelSpec, device: str, dtype: str, offline: bool) -> LoadedModel:
    """Load (once per process per weights/device/dtype) a CLIP or DINOv2 model + its processor.

    The cache key leaves out the display name, so two names for the same folder share one copy.
    A lock keeps two threads from loading the same weights twice.
    """
    with _LOAD_LOCK:
        return _load_model(spec.family, spec.source, spec.local_dir, device, dtype, offline)


@functools.lru_cache(maxsize=4)
def _load_model(
    family: Family, source: str, local_dir: bool, device: str, dtype: str, offline: bool
) -> LoadedModel:
    torch, transformers = import_ml()
    spec = ModelSpec(source, family, source, local_dir)
    if spec.family == "clip":
        cls = transformers.CLIPModel
    elif spec.family == "dinov2":
        cls = transformers.AutoModel
    else:
        raise InvalidInputError(f"{spec.name} is not a transformers model")
    model = _from_pretrained(cls, spec, offline, "weights")
    processor = _from_pretrained(transformers.AutoImageProcessor, spec, offline, "preprocessor")
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    config = model.config
    dimension = int(config.projection_dim if spec.family == "clip" else config.hidden_size)
    return LoadedModel(spec, model, processor, dimension, device, dtype)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(source: str, local_dir: bool, offline: bool) -> Any:
    _, transformers = import_ml()
    spec = ModelSpec(source, "clip", source, local_dir)
    return _from_pretrained(transformers.AutoTokenizer, spec, offline, "tokenizer")


def load_tokenizer(spec: ModelSpec, offline: bool) -> Any:
    """The CLIP tokenizer saved beside the weights (cached like the model)."""
    with _LOAD_LOCK:
        return _load_tokenizer(spec.source, spec.local_dir, offline)


def model_cache_info() -> Any:
    """``functools`` cache statistics of loaded models (hits, misses, current size)."""
    return _load_model.cache_info()
