"""Gradual transitions, flash frames and short shots (issue 11).

Two kinds of evidence: edits made by ffmpeg (``benchmarks.eval_footage``: dissolves, fades,
wipes, flashes, short shots; the truth from how each edit was built, itself checked on flat
colours here), and frames made in numpy, where every pixel of a dissolve or a flash is known.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.eval_footage import EvalFootage, Transition, flash_false_cuts, make_eval_footage
from heaters_media.frames import FrameGeometry, stream_frames
from heaters_media.scene_policy import plan_scenes
from heaters_media.scenes import ContentScorer, candidate_cuts, detect_scenes
from heaters_media.transitions import (
    HISTORY,
    Boundary,
    TransitionScorer,
    find_boundaries,
    recompute_head,
    thumbnails,
)

FLAT = [f"color=c=0x{c:06x}:s={{w}}x{{h}}:r={{fps}}" for c in (0xC02020, 0x2040C0, 0x20A040)]
FLAT += [f"color=c=0x{c:06x}:s={{w}}x{{h}}:r={{fps}}" for c in (0xC0C020, 0x8020A0, 0x20A0A0)]


@pytest.fixture(scope="module")
def edit(tmp_path_factory: pytest.TempPathFactory) -> EvalFootage:
    """Two joints of every kind, two short shots, three flashes, at 320x180 (~600 frames)."""
    out = tmp_path_factory.mktemp("transitions") / "edit.mp4"
    return make_eval_footage(out, seed=21, per_kind=2, size=(320, 180))


def _inside(t: Transition, cut: int, tolerance: int = 2) -> bool:
    return t.first - tolerance <= cut <= t.last + tolerance


def _shot_ranges(footage: EvalFootage) -> list[tuple[int, int]]:
    """[start, end) of each shot's own frames (outside every transition), from the truth."""
    starts = [0] + [t.cut if t.kind == "cut" else t.last + 1 for t in footage.transitions]
    ends = [t.cut if t.kind == "cut" else t.first for t in footage.transitions]
    return list(zip(starts, [*ends, footage.frames], strict=True))


def test_truth_matches_the_pixels(tmp_path: Path) -> None:
    """On flat colours every frame the truth calls a shot's own is that shot's colour, the
    middle of every gradual transition is neither neighbour, and flash frames are light."""
    footage = make_eval_footage(
        tmp_path / "flat.mp4", seed=4, per_kind=2, size=(64, 36), sources=FLAT
    )
    means = np.concatenate(
        [
            c.reshape(len(c), -1, 3).mean(axis=1)
            for c in stream_frames(footage.path, FrameGeometry(32, 18))
        ]
    )
    assert len(means) == footage.frames
    flashed = {i for f in footage.flashes for i in range(f.first, f.last + 1)}
    colours = []
    for start, end in _shot_ranges(footage):
        own = [i for i in range(start, end) if i not in flashed]
        colour = np.median(means[own], axis=0)
        assert np.abs(means[own] - colour).max() <= 4, (start, end)
        colours.append(colour)
    for k, t in enumerate(footage.transitions):
        before, after = colours[k], colours[k + 1]
        assert np.abs(before - after).max() >= 30
        if t.kind != "cut":
            middle = means[t.cut]
            assert min(np.abs(middle - before).max(), np.abs(middle - after).max()) >= 10, t
    assert footage.flashes
    for f in footage.flashes:
        shot = next(k for k, (a, b) in enumerate(_shot_ranges(footage)) if a <= f.first < b)
        assert (means[f.first : f.last + 1].sum(axis=1) > colours[shot].sum() + 60).all(), f


def test_one_cut_per_transition_and_none_at_flashes(edit: EvalFootage) -> None:
    found = detect_scenes(edit.path).metadata["transitions"]
    cuts = [b["cut"] for b in found]
    for t in edit.transitions:
        matched = [b for b in found if _inside(t, b["cut"], 1 if t.kind == "cut" else 2)]
        assert len(matched) == 1, (t, found)
        kind = matched[0]["kind"]
        assert kind == (t.kind if t.kind in ("cut", "fade_black", "fade_white") else "gradual")
    assert len(found) == len(edit.transitions), found
    assert flash_false_cuts(cuts, edit) == 0
    # The footage is hard for a cut detector: today's (hard cuts only) misses or doubles some.
    legacy = detect_scenes(edit.path, gradual=False, short_policy="merge").cut_frames
    counts = [sum(_inside(t, c) for c in legacy) for t in edit.transitions if t.kind != "cut"]
    assert any(n != 1 for n in counts) or flash_false_cuts(legacy, edit) > 0


def test_short_shots_are_their_own_scenes(edit: EvalFootage) -> None:
    ranges = _shot_ranges(edit)
    short = [ranges[k] for k, shot in enumerate(edit.shots) if shot.short]
    assert len(short) == 2
    kept = detect_scenes(edit.path)
    assert [(s.start_frame, s.end_frame) for s in kept.scenes if s.short] == short
    dropped = detect_scenes(edit.path, short_policy="drop")
    assert [tuple(d) for d in dropped.metadata["dropped_scenes"]] == short
    scenes = [(s.start_frame, s.end_frame) for s in dropped.scenes]
    assert not set(short) & set(scenes) and len(scenes) == len(kept.scenes) - 2
    merged = detect_scenes(edit.path, short_policy="merge")
    assert len(merged.scenes) < len(kept.scenes)
    assert not any(s.short for s in merged.scenes[:-1])


def test_trimmed_scenes_leave_transition_frames_out(edit: EvalFootage) -> None:
    plain = detect_scenes(edit.path)
    trimmed = detect_scenes(edit.path, trim_transitions=True)
    assert plain.metadata["transitions"] == trimmed.metadata["transitions"]
    spans = [(b["start"], b["end"]) for b in plain.metadata["transitions"] if b["end"] > b["start"]]
    assert len(spans) >= 6  # every gradual transition has frames to leave out
    assert [s.transition_before for s in plain.scenes if s.transition_before] == spans
    assert [s.transition_before for s in trimmed.scenes if s.transition_before] == spans
    tiles = [f for s in plain.scenes for f in range(s.start_frame, s.end_frame)]
    assert tiles == list(range(edit.frames))
    in_spans = {f for a, b in spans for f in range(a, b)}
    kept = [f for s in trimmed.scenes for f in range(s.start_frame, s.end_frame)]
    assert kept == [f for f in range(edit.frames) if f not in in_spans]
    assert trimmed.cut_frames == [s.start_frame for s in trimmed.scenes[1:]]


def test_segments_decoded_side_by_side_give_the_same_boundaries(
    edit: EvalFootage, tmp_path: Path
) -> None:
    """Key frames every 10 frames, so two decoders split the video; the second one's first
    transition rows are recomputed from the first one's last thumbnails."""
    gop = tmp_path / "gop.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-i", str(edit.path), "-c:v", "libx264"),
            *("-preset", "veryfast", "-g", "10", "-keyint_min", "10", "-sc_threshold", "0"),
            str(gop),
        ],
        check=True,
    )
    one = detect_scenes(gop, workers=1)
    two = detect_scenes(gop, workers=2)
    assert two.metadata["decode_segments"] == 2
    for key in ("transitions", "flashes", "cut_strengths"):
        assert one.metadata[key] == two.metadata[key], key


def test_rows_of_segments_equal_one_pass() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (300, 36, 64, 3), dtype=np.uint8)
    one = TransitionScorer().score(frames)
    scorer = TransitionScorer()
    chunked = np.concatenate([scorer.score(frames[i : i + 37]) for i in range(0, 300, 37)])
    assert np.array_equal(one, chunked)
    first, second = frames[:130], frames[130:]
    rows = TransitionScorer().score(second)
    assert not np.array_equal(rows[:HISTORY], one[130 : 130 + HISTORY])
    rows[:HISTORY] = recompute_head(thumbnails(first)[-HISTORY:], thumbnails(second)[:HISTORY])
    assert np.array_equal(np.concatenate([TransitionScorer().score(first), rows]), one)


# Frames made in numpy: smooth random pictures with a little sensor noise.


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(20, 236, (9, 16, 3)).astype(np.float32)
    return np.kron(coarse, np.ones((10, 10, 1), dtype=np.float32))  # 90x160


def _shot(picture: np.ndarray, n: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 1.5, (n, *picture.shape))
    return picture[None] + noise


def _clip(frames: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _detect(frames: np.ndarray) -> tuple[list[Boundary], list[tuple[int, int]]]:
    scores = ContentScorer().score(frames)
    hard, _ = candidate_cuts("adaptive", scores, 3.0)
    return find_boundaries(TransitionScorer().score(frames), hard)


def _blend(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """n frames going from a to b (the pure ends excluded), as ffmpeg's xfade fade does."""
    alpha = (np.arange(1, n + 1) / (n + 1))[:, None, None, None]
    return (1 - alpha) * a[None] + alpha * b[None]


def test_a_dissolve_is_one_boundary_in_its_middle() -> None:
    a, b = _picture(1), _picture(2)
    frames = _clip(np.concatenate([_shot(a, 60, 3), _blend(a, b, 16), _shot(b, 60, 4)]))
    assert candidate_cuts("adaptive", ContentScorer().score(frames), 3.0)[0].tolist() == []
    (boundary,), flashes = _detect(frames)
    assert boundary.kind == "gradual" and flashes == []
    assert 66 <= boundary.cut <= 70  # the blend is frames 60..75
    assert 58 <= boundary.start <= boundary.cut <= boundary.end <= 78


def test_a_wipe_is_one_boundary() -> None:
    a, b = _picture(5), _picture(6)
    wipe = np.stack(
        [np.concatenate([b[:, : 10 * k], a[:, 10 * k :]], axis=1) for k in range(1, 16)]
    )
    frames = _clip(np.concatenate([_shot(a, 60, 7), wipe, _shot(b, 60, 8)]))
    (boundary,), _ = _detect(frames)
    assert boundary.kind == "gradual" and 62 <= boundary.cut <= 74


def test_a_fade_through_black_is_one_boundary_on_the_black() -> None:
    a, b = _picture(9), _picture(10)
    black = np.zeros_like(a)
    frames = _clip(
        np.concatenate(
            [
                *(_shot(a, 60, 11), _blend(a, black, 8), black[None].repeat(2, 0)),
                *(_blend(black, b, 8), _shot(b, 60, 12)),
            ]
        )
    )
    (boundary,), _ = _detect(frames)
    assert boundary.kind == "fade_black" and boundary.cut in (68, 69)
    assert boundary.start <= 62 and boundary.end >= 76


@pytest.mark.parametrize("length", [1, 2, 3])
def test_a_flash_inside_a_shot_is_no_boundary(length: int) -> None:
    a = _picture(13)
    shot = _shot(a, 120, 14)
    shot[50 : 50 + length] = 0.15 * shot[50 : 50 + length] + 0.85 * 255
    boundaries, flashes = _detect(_clip(shot))
    assert boundaries == []
    assert flashes == [(50, 50 + length)]  # the flash frames and the frame that returns


def test_a_hard_cut_stays_a_cut_and_a_pan_is_nothing() -> None:
    a, b = _picture(15), _picture(16)
    (cut,), _ = _detect(_clip(np.concatenate([_shot(a, 60, 17), _shot(b, 60, 18)])))
    assert (cut.cut, cut.start, cut.end, cut.kind) == (60, 60, 60, "cut")
    wide = np.concatenate([_picture(19), _picture(20), _picture(21)], axis=1)  # 90x480
    pan = np.stack([wide[:, 2 * k : 2 * k + 160] for k in range(150)])
    assert _detect(_clip(pan)) == ([], [])


def test_scenes_keep_their_meaning(edit: EvalFootage) -> None:
    """``cut_frames`` are still the first frames of the scenes after the first, and the new
    fields are the only new keys of a scene."""
    result = detect_scenes(edit.path)
    assert result.cut_frames == [s.start_frame for s in result.scenes[1:]]
    assert set(vars(result.scenes[0])) == {
        "start_frame",
        "end_frame",
        "start_time",
        "end_time",
        "short",
        "transition_before",
    }
    meta: dict[str, Any] = result.metadata
    assert meta["gradual"] is True and meta["short_policy"] == "keep"
    assert len(meta["flashes"]) == len(edit.flashes)


def test_scene_plan_rules() -> None:
    """``plan_scenes`` on boundaries written by hand: short marking, drop, trim, and the two
    guards (a scene is never trimmed away; a video of one short scene keeps it)."""
    cut, fade = Boundary(10, 10, 10, "cut"), Boundary(40, 30, 50, "gradual")
    spans, kept, dropped = plan_scenes([cut, fade], 100, 25, "keep", trim=False)
    assert [(s.start, s.end, s.short, s.transition_before) for s in spans] == [
        (0, 10, True, None),
        (10, 40, False, None),
        (40, 100, False, (30, 50)),
    ]
    assert kept == [cut, fade] and dropped == []
    spans, _, dropped = plan_scenes([cut, fade], 100, 15, "drop", trim=True)
    assert [(s.start, s.end) for s in spans] == [(10, 30), (50, 100)]
    assert [(s.start, s.end) for s in dropped] == [(0, 10)]
    wide = Boundary(20, 12, 28, "gradual")  # its span swallows the scene after the cut
    spans, _, _ = plan_scenes([Boundary(12, 12, 12, "cut"), wide], 40, 5, "keep", trim=True)
    assert [(s.start, s.end) for s in spans] == [(0, 12), (12, 20), (28, 40)]
    spans, _, dropped = plan_scenes([], 10, 25, "drop", trim=False)
    assert [(s.start, s.end, s.short) for s in spans] == [(0, 10, True)] and dropped == []
