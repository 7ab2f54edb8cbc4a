"""Which frames are picked, without decoding anything: cut selection and the minimum scene
length (`heaters_media.scenes`), keyframe positions (`keyframes`) and the sprite plan (`sprite`).

These pure functions decide what every clip, thumbnail and sprite sheet is made of; the tests
here pin their rules on small hand-made inputs (exact boundaries, edge padding, rounding) so that
scripts/mutation.sh can tell a changed rule from an unchanged one in milliseconds.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

from heaters_media import keyframes
from heaters_media.errors import InvalidInputError
from heaters_media.keyframes import keyframe_positions
from heaters_media.scenes import (
    ADAPTIVE_MIN_CONTENT,
    Scene,
    adaptive_ratio,
    candidate_cuts,
    enforce_min_length,
    scenes_from_cuts,
)
from heaters_media.sprite import _rate, fps_filter_frames, plan_sprite


def _reference_ratio(scores: list[float], window: int = 2) -> list[float]:
    """The adaptive rule written out plainly: each score over the mean of the `window` scores on
    either side, the sequence extended by repeating its end values; a flat zero neighbourhood
    gives 255 for any motion and 0 for none."""
    out = []
    n = len(scores)
    for i, s in enumerate(scores):
        near = [scores[min(max(j, 0), n - 1)] for j in range(i - window, i + window + 1) if j != i]
        mean = sum(near) / len(near)
        out.append(s / mean if mean > 1e-9 else (255.0 if s > 0 else 0.0))
    return out


# ------------------------------------------------------------------------------ adaptive ratio


@pytest.mark.parametrize(
    "scores",
    [
        [1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0],
        [40.0, 40.0, 160.0, 40.0, 40.0, 41.0],
        [100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0],
        [0.0, 0.0, 3.0, 0.0, 0.0],
        [0.0, 0.0, 0.5, 0.0, 0.0],
        [0.5, 0.25, 0.5, 0.75, 0.5, 0.25],
        [1e-9, 1e-9, 5e-9, 1e-9, 1e-9],  # a mean of exactly 1e-9 still counts as still
    ],
)
def test_adaptive_ratio_matches_the_written_rule(scores: list[float]) -> None:
    """Two neighbours each side, edge padding, 255 where the neighbours are still."""
    got = adaptive_ratio(np.array(scores))
    assert got.tolist() == pytest.approx(_reference_ratio(scores))
    assert len(got) == len(scores)


def test_adaptive_ratio_is_quiet_about_still_neighbourhoods() -> None:
    """Still footage (zero scores) is a normal input: no division warnings, ratio 0 where
    nothing moves and 255 where something moves after stillness."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        still = adaptive_ratio(np.zeros(6))
        first_motion = adaptive_ratio(np.array([0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0]))
    assert still.tolist() == [0.0] * 6
    assert first_motion[3] == 255.0


def test_adaptive_ratio_window_is_a_parameter() -> None:
    """The neighbourhood size is honoured, not fixed at the default."""
    scores = [1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0, 64.0]
    got = adaptive_ratio(np.array(scores), window=3)
    assert got.tolist() == pytest.approx(_reference_ratio(scores, window=3))


# ------------------------------------------------------------------------------ candidate cuts


def test_content_detector_cuts_at_or_above_its_threshold() -> None:
    """The content detector's threshold is inclusive; its strength is the score itself."""
    scores = np.array([99.0, 10.0, 27.0, 26.9, 40.0])
    cuts, strength = candidate_cuts("content", scores, 27.0)
    assert cuts.tolist() == [2, 4]  # frame 0 never starts a cut, 27.0 is enough
    assert strength.tolist() == scores.tolist()


def test_histogram_detector_cuts_below_its_correlation_threshold() -> None:
    """The histogram detector cuts where correlation drops strictly below the threshold."""
    scores = np.array([0.1, 0.9, 0.6, 0.59, 1.0])
    cuts, strength = candidate_cuts("histogram", scores, 0.6)
    assert cuts.tolist() == [3]  # 0.6 itself is still the same scene
    assert strength.tolist() == pytest.approx([0.9, 0.1, 0.4, 0.41, 0.0])


def test_adaptive_detector_needs_both_ratio_and_content() -> None:
    """A cut is an isolated spike (ratio >= threshold) that is also a real change
    (content >= ADAPTIVE_MIN_CONTENT); either alone is not a cut."""
    base = [1.0] * 12
    scores = np.array(base)
    scores[3] = ADAPTIVE_MIN_CONTENT  # spike, exactly the minimum content
    scores[8] = ADAPTIVE_MIN_CONTENT - 0.5  # spike, too little content
    cuts, strength = candidate_cuts("adaptive", scores, 3.0)
    assert cuts.tolist() == [3]
    assert strength.tolist() == pytest.approx(adaptive_ratio(scores).tolist())
    # a large but steady change (camera motion) is no cut, however high its content
    steady = np.full(12, 80.0)
    assert candidate_cuts("adaptive", steady, 3.0)[0].tolist() == []
    # the ratio threshold is inclusive: a spike of ratio exactly 3.0 cuts, 2.9 does not
    exact = np.array([20.0, 20.0, 20.0, 60.0, 20.0, 20.0, 20.0])
    assert adaptive_ratio(exact)[3] == pytest.approx(3.0)
    assert candidate_cuts("adaptive", exact, 3.0)[0].tolist() == [3]
    assert candidate_cuts("adaptive", exact, 3.0001)[0].tolist() == []


def test_a_cut_may_fall_on_frame_one_but_never_on_frame_zero() -> None:
    """Frame 0 starts the first scene; the very next frame may already start a new one."""
    scores = np.array([90.0, 90.0, 0.0, 0.0])
    assert candidate_cuts("content", scores, 27.0)[0].tolist() == [1]
    assert candidate_cuts("histogram", np.array([0.0, 0.0, 1.0]), 0.6)[0].tolist() == [1]


# ------------------------------------------------------------------------- minimum scene length


def test_min_length_is_measured_from_the_last_kept_cut() -> None:
    """Cuts too close to the previously kept cut (or to frame 0) are dropped; kept cuts are plain
    ints."""
    cuts = np.array([10, 19, 20, 30, 31, 45])
    assert enforce_min_length(cuts, 10) == [10, 20, 30, 45]
    kept = enforce_min_length(cuts, 10)
    assert all(type(c) is int for c in kept)
    # the first scene is measured from frame 0: a cut at exactly min_frames stays
    assert enforce_min_length(np.array([5, 9]), 5) == [5]
    assert enforce_min_length(np.array([4, 9]), 5) == [9]
    assert enforce_min_length(np.array([], dtype=np.int64), 3) == []


def test_min_length_of_one_keeps_every_cut() -> None:
    """The smallest minimum length removes nothing."""
    assert enforce_min_length(np.array([1, 2, 3, 7]), 1) == [1, 2, 3, 7]


# ---------------------------------------------------------------------------------- scenes


def test_scenes_tile_the_frames_with_rounded_times() -> None:
    """Scenes are half-open frame ranges tiling the video, with times rounded to microseconds."""
    scenes = scenes_from_cuts([1, 4], 7, 3.0)
    assert scenes == [
        Scene(0, 1, 0.0, 0.333333),
        Scene(1, 4, 0.333333, 1.333333),
        Scene(4, 7, 1.333333, 2.333333),
    ]


def test_scenes_skip_empty_ranges() -> None:
    """Duplicate or boundary cuts never produce empty scenes."""
    assert scenes_from_cuts([0, 5, 5, 10], 10, 5.0) == [
        Scene(0, 5, 0.0, 1.0),
        Scene(5, 10, 1.0, 2.0),
    ]
    assert scenes_from_cuts([], 4, 2.0) == [Scene(0, 4, 0.0, 2.0)]


# ------------------------------------------------------------------------------- keyframes


@pytest.mark.parametrize(
    ("frames", "strategy", "expected"),
    [
        (100, "multi", [(25, 25), (50, 50), (75, 75)]),
        (3, "multi", [(25, 0), (50, 1), (75, 2)]),
        (7, "midpoint", [(50, 3)]),
        (1, "multi", [(25, 0), (50, 0), (75, 0)]),
    ],
)
def test_keyframe_positions_floor_the_percentage(
    frames: int, strategy: str, expected: list[tuple[int, int]]
) -> None:
    """The frame at p % of n frames is floor(n * p / 100), an integer frame index."""
    got = keyframe_positions(frames, strategy)
    assert got == expected
    assert all(type(i) is int for _, i in got)


def test_keyframe_at_100_percent_is_the_last_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """Positions are clamped to the clip: 100 % is its last frame, not one past the end."""
    monkeypatch.setitem(keyframes.STRATEGIES, "ends", (0, 100))
    assert keyframe_positions(10, "ends") == [(0, 0), (100, 9)]


def test_unknown_keyframe_strategy_names_the_choices() -> None:
    """A typo in a strategy is answered with the valid ones."""
    with pytest.raises(InvalidInputError, match="use one of midpoint, multi"):
        keyframe_positions(10, "random")


# ---------------------------------------------------------------------------------- sprites


def test_fps_filter_frames_rounds_to_nearest_half_up() -> None:
    """ffmpeg's fps filter rounds the output frame count to nearest (half up)."""
    assert fps_filter_frames(100, Fraction(25), Fraction(24)) == 96
    assert fps_filter_frames(7, Fraction(25), Fraction(24)) == 7  # 6.72
    assert fps_filter_frames(1, Fraction(2), Fraction(1)) == 1  # 0.5
    assert fps_filter_frames(1, Fraction(5), Fraction(1)) == 0  # 0.2
    assert fps_filter_frames(7, Fraction(5), Fraction(1)) == 1  # 1.4
    assert fps_filter_frames(9, Fraction(5), Fraction(1)) == 2  # 1.8


def test_sprite_rates_have_small_denominators() -> None:
    """Rates go to ffmpeg as a fraction; NTSC-style rates stay exact, others are limited to a
    denominator of 1001."""
    assert _rate(30000 / 1001) == Fraction(30000, 1001)
    assert _rate(24.0) == Fraction(24)
    assert _rate(Fraction(1, 1002)).denominator <= 1001
    assert _rate(Fraction(1, 1002)) == Fraction(1, 1001)


def _plan(frames: int, fps: Fraction, **kw: float) -> tuple[Fraction, int, int, int]:
    args: dict[str, float] = {
        "tile_width": 4,
        "tile_height": 2,
        "max_fps": 24.0,
        "cols": 5,
        "max_height": 65500,
    }
    args.update(kw)
    return plan_sprite(
        frames,
        fps,
        tile_width=int(args["tile_width"]),
        tile_height=int(args["tile_height"]),
        max_fps=args["max_fps"],
        cols=int(args["cols"]),
        max_height=int(args["max_height"]),
    )


def test_sprite_plan_samples_at_the_lower_of_max_fps_and_clip_fps() -> None:
    """The sheet samples at max_fps, never faster than the clip, and never has more columns than
    tiles."""
    assert _plan(100, Fraction(25)) == (Fraction(24), 96, 5, 20)
    assert _plan(30, Fraction(15)) == (Fraction(15), 30, 5, 6)
    assert _plan(10, Fraction(25), max_fps=5.0, cols=3) == (Fraction(5), 2, 2, 1)


def test_sprite_plan_gives_a_short_clip_one_tile() -> None:
    """A clip shorter than one sprite interval still gets one tile, at the clip's own length."""
    assert _plan(2, Fraction(30), max_fps=5.0) == (Fraction(15), 1, 1, 1)
    # exactly one tile from the normal rule keeps the requested rate
    assert _plan(2, Fraction(25), max_fps=12.0) == (Fraction(12), 1, 1, 1)


def test_sprite_plan_keeps_the_sheet_within_max_height() -> None:
    # 40 px tiles in 100 px: 2 whole rows of 5 = 10 tiles at most (not 2.5 rows)
    """Whole rows only: the sheet never exceeds max_height, and a tile that cannot fit is
    refused."""
    rate, n, cols, rows = _plan(300, Fraction(25), tile_height=40, max_height=100, max_fps=1.0)
    assert (n, cols, rows) == (10, 5, 2)
    assert rate == Fraction(5, 6)
    # one row that fits exactly is allowed
    assert _plan(7, Fraction(25), tile_height=2, max_height=2, cols=7) == (Fraction(24), 7, 7, 1)
    with pytest.raises(InvalidInputError, match="a tile 3 px high does not fit a 2 px sheet"):
        _plan(7, Fraction(25), tile_height=3, max_height=2)


def test_sprite_plan_at_exactly_the_tile_limit_keeps_its_rate() -> None:
    """7 tiles fit 7 slots: the sampling rate stays at max_fps (no re-planning)."""
    assert _plan(7, Fraction(25), max_fps=24.0, cols=7, max_height=3) == (Fraction(24), 7, 7, 1)


@pytest.mark.timeout(10)  # a broken step-down loop never ends
def test_sprite_plan_lowers_the_rate_until_the_tiles_fit() -> None:
    """The first reduced rate (1/2 fps) rounds to one tile too many; the plan steps the rate down
    until ffmpeg's frame count fits."""
    rate, n, cols, rows = _plan(50125, Fraction(25), max_fps=30.0, cols=1, max_height=2004)
    assert (rate, n, cols, rows) == (Fraction(500, 1001), 1001, 1, 1001)
    assert fps_filter_frames(50125, Fraction(25), rate) <= 1002


def test_plan_sprite_terminates_for_a_long_clip_and_a_tiny_sheet() -> None:
    """A sheet of 1 column x 1 row over 50,000 frames needs a rate below 1/2002 fps, which the
    1001-denominator rounding cannot express: the plan must still end, with one tile."""
    rate, tiles, cols, rows = plan_sprite(
        50_000, Fraction(25), tile_width=4, tile_height=2, max_fps=24, cols=1, max_height=2
    )
    assert (tiles, cols, rows) == (1, 1, 1)
    assert fps_filter_frames(50_000, Fraction(25), rate) == 1
