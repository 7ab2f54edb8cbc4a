"""Per-run configuration (Dagster config): what a user may change from the launchpad."""

import dagster as dg


class IngestConfig(dg.Config):
    max_height: int = 1080
    force_normalize: bool = False
    overwrite: bool = False


class SceneConfig(dg.Config):
    """Scene detection; re-splicing with ``overwrite`` replaces the video's clips."""

    detector: str = "adaptive"
    threshold: float | None = None
    min_scene_len: float = 1.0
    overwrite: bool = False


class KeyframeConfig(dg.Config):
    strategy: str = "multi"
    overwrite: bool = False


class SpriteConfig(dg.Config):
    tile_width: int = 480
    max_fps: float = 24.0
    cols: int = 5
    overwrite: bool = False
