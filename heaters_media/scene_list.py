"""The list of scenes a video is cut into: validated frame ranges and the clip file names.

Kept apart from the cutting itself (:mod:`heaters_media.split`) because every cutter takes the
same input and must refuse the same mistakes with the same typed errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from heaters_media.errors import InvalidInputError


def as_frame(value: Any, what: str) -> int:
    """``value`` as a frame number: an int, or a float with no fraction (JSON may give 12.0)."""
    if isinstance(value, bool) or value is None:
        raise InvalidInputError(f"{what} must be an integer frame number, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidInputError(f"{what} must be an integer frame number, got {value!r}")
        return int(value)
    if isinstance(value, int):
        return value
    raise InvalidInputError(f"{what} must be an integer frame number, got {value!r}")


def _scene_bounds(scene: Any, k: int) -> tuple[int, int]:
    """(start_frame, end_frame) of a scene given as a mapping, an object, or a pair."""
    if isinstance(scene, Mapping):
        if "start_frame" not in scene or "end_frame" not in scene:
            raise InvalidInputError(f"scene {k} needs start_frame and end_frame: {scene!r}")
        start, end = scene["start_frame"], scene["end_frame"]
    elif hasattr(scene, "start_frame") and hasattr(scene, "end_frame"):
        start, end = scene.start_frame, scene.end_frame
    elif isinstance(scene, Sequence) and not isinstance(scene, str) and len(scene) == 2:
        start, end = scene
    else:
        raise InvalidInputError(f"scene {k} is not a scene: {scene!r}")
    return as_frame(start, f"scene {k} start_frame"), as_frame(end, f"scene {k} end_frame")


def validate_scenes(scenes: Any, frame_count: int) -> list[tuple[int, int]]:
    """Scenes as (start, end) pairs: in [0, frame_count], non-empty, sorted, non-overlapping."""
    if isinstance(scenes, (str, bytes, Mapping)) or not isinstance(scenes, Sequence):
        raise InvalidInputError("scenes must be a list of {start_frame, end_frame} scenes")
    if not scenes:
        raise InvalidInputError("scenes is empty: nothing to split")
    pairs = [_scene_bounds(s, k) for k, s in enumerate(scenes)]
    prev_end = 0
    for k, (start, end) in enumerate(pairs):
        if start < 0 or end > frame_count:
            raise InvalidInputError(
                f"scene {k} [{start}, {end}) is outside the video's frames [0, {frame_count})",
                scene=k,
                start_frame=start,
                end_frame=end,
                frame_count=frame_count,
            )
        if end <= start:
            raise InvalidInputError(f"scene {k} [{start}, {end}) is empty or reversed", scene=k)
        if start < prev_end:
            raise InvalidInputError(
                f"scene {k} [{start}, {end}) overlaps or precedes the previous scene "
                f"(which ends at {prev_end}); scenes must be sorted and non-overlapping",
                scene=k,
            )
        prev_end = end
    return pairs


def clip_names(template: str, stem: str, pairs: list[tuple[int, int]]) -> list[str]:
    names = []
    for k, (start, end) in enumerate(pairs):
        try:
            name = template.format(stem=stem, index=k, start=start, end=end)
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidInputError(
                f"bad name_template {template!r}: {exc}; use {{stem}} {{index}} {{start}} {{end}}"
            ) from exc
        if (
            not name
            or "/" in name
            or "\\" in name
            or name.startswith(".")
            or Path(name).suffix.lower() != ".mp4"
        ):
            raise InvalidInputError(
                f"name_template gives {name!r}: clip names must be plain file names ending in .mp4"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise InvalidInputError(f"name_template {template!r} gives duplicate clip names")
    return names
