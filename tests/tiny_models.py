"""Tiny randomly initialized CLIP and DINOv2 models, written with ``save_pretrained``.

Shared by the media tests (tests/test_embed.py) and the platform tests
(tests/test_embeddings_platform.py): both load them back through the real ``from_pretrained``
code, so no weights are ever downloaded. Configs keep bos/eos/pad ids inside the tiny vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

CLIP_DIMENSION = 16  # projection_dim
DINOV2_DIMENSION = 32  # hidden_size


def build_tiny_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write ``tiny-clip`` and ``tiny-dinov2`` folders under ``root``; return them by family."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    clip_dir = root / "tiny-clip"
    text = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    config = tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=CLIP_DIMENSION)
    tf.CLIPModel(config).save_pretrained(clip_dir)
    tf.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(clip_dir)
    # A tiny byte-level BPE vocabulary: letters and letter</w>, no merges; ids 0/1 = bos/eos.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in "abcdefghijklmnopqrstuvwxyz":
            vocab[ch + suffix] = len(vocab)
    (clip_dir / "vocab.json").write_text(json.dumps(vocab))
    (clip_dir / "merges.txt").write_text("#version: 0.2\n")
    (clip_dir / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 16})
    )

    dino_dir = root / "tiny-dinov2"
    dino = tf.Dinov2Config(
        hidden_size=DINOV2_DIMENSION,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
    )
    tf.Dinov2Model(dino).save_pretrained(dino_dir)
    tf.BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(dino_dir)
    return {"clip": clip_dir, "dinov2": dino_dir}


def config_only_folder(source: Path, target: Path) -> Path:
    """A model folder with ``config.json`` but no weights (the "weights missing" case)."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text((source / "config.json").read_text())
    return target


def build_real_size_models(root: Path) -> dict[str, Path]:
    """Tiny random models behind the real processors' settings (224 px inputs): ``clip-224``
    (openai's CLIPImageProcessor defaults) and ``dinov2-224`` (facebook/dinov2-*'s)."""
    import torch
    import transformers as tf

    torch.manual_seed(1)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    text = dict(vocab_size=64, max_position_embeddings=16, **vision)
    clip = tf.CLIPConfig(
        text_config=text, vision_config={**vision, "image_size": 224, "patch_size": 32}
    )
    tf.CLIPModel(clip).save_pretrained(root / "clip-224")
    tf.CLIPImageProcessor().save_pretrained(root / "clip-224")  # openai's defaults
    dino = tf.Dinov2Config(
        image_size=224, patch_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4
    )
    tf.Dinov2Model(dino).save_pretrained(root / "dinov2-224")
    tf.BitImageProcessor(  # facebook/dinov2-*'s preprocessor_config.json
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(root / "dinov2-224")
    return {"clip-224": root / "clip-224", "dinov2-224": root / "dinov2-224"}
