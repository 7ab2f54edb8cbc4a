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
    #: Shots shorter than min_scene_len: "keep" (their own clip, marked short, out of the
    #: review queue), "merge" (into the next clip: the behaviour before), "drop" (no clip).
    short_policy: str = "keep"
    #: Leave a fade's / dissolve's / wipe's frames out of both neighbouring clips.
    trim_transitions: bool = False
    #: "exact": cut every clip's file now; "proxy": clip rows only, a review proxy each, the
    #: file cut when the clip is approved. Unset: HEATERS_CLIPS (default "proxy").
    clips: str | None = None
    overwrite: bool = False


class ClipArtifactsConfig(dg.Config):
    """Keyframes (``strategy``: multi = 25/50/75 %, or midpoint) and sprite sheets (tiles of
    ``tile_width`` px, at most ``max_fps`` frames a second, ``cols`` columns). ``overwrite``
    redoes clips that already have them (e.g. a new strategy for the whole library)."""

    strategy: str = "multi"
    tile_width: int = 480
    max_fps: float = 24.0
    cols: int = 5
    overwrite: bool = False
