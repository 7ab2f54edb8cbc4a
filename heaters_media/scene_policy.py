"""From scene boundaries to scenes: what to do with short shots and with transition frames.

A clip that straddles two shots is wrong at the library's unit, so no policy but ``merge``
(the behaviour before issue 11, kept for re-splicing old videos alike) ever removes a detected
boundary:

- ``keep`` (default): every boundary starts a scene; a scene shorter than the minimum length is
  its own scene, marked ``short`` (the platform keeps it out of the review queue).
- ``merge``: a boundary closer than the minimum length to the previous kept one is dropped, so
  a short shot joins the next scene (``scenes.enforce_min_length``).
- ``drop``: short scenes are left out; their frames belong to no scene (unless the video is
  one short scene: an empty result would lose the video).

``trim`` leaves a gradual transition's frames out of both neighbouring scenes (a dissolve's
frames show two shots at once); scenes then leave gaps, which ``split_video`` allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from heaters_media.transitions import Boundary

SHORT_POLICIES = ("keep", "merge", "drop")


@dataclass(frozen=True)
class Span:
    start: int
    end: int  # exclusive
    short: bool
    transition_before: tuple[int, int] | None  # [start, end) of the transition into it


def plan_scenes(
    boundaries: list[Boundary], frame_count: int, min_frames: int, policy: str, trim: bool
) -> tuple[list[Span], list[Boundary], list[Span]]:
    """Scenes, the boundaries they keep, and the scenes dropped (``drop`` only).

    ``merge`` is applied by the caller (``scenes.enforce_min_length`` on the boundaries' cuts);
    here it only marks a short last scene, as every policy does.
    """
    boundaries = [b for b in boundaries if 0 < b.cut < frame_count]
    spans: list[Span] = []
    before: Boundary | None = None
    for after in [*boundaries, None]:
        start = 0 if before is None else before.cut
        end = frame_count if after is None else after.cut
        if trim:
            inner_start = start if before is None else max(start, before.end)
            inner_end = end if after is None else min(end, after.start)
            if inner_end > inner_start:  # never trim a scene away
                start, end = inner_start, inner_end
        span = None if before is None or before.end <= before.start else (before.start, before.end)
        if end > start:
            spans.append(Span(start, end, end - start < min_frames, span))
        before = after
    dropped: list[Span] = []
    if policy == "drop" and any(not s.short for s in spans):
        dropped = [s for s in spans if s.short]
        spans = [s for s in spans if not s.short]
    return spans, boundaries, dropped
