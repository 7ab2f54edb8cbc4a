"""Meaningless parameters refused by the library functions themselves, so every caller (the
CLIs, the Dagster config of `clip_splits`, the search commands) gets the same typed error:
NaN, infinity, zero and negative values where they cannot mean anything.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from heaters_media.errors import InvalidInputError
from heaters_media.scenes import check_parameters, detect_scenes
from heaters_resources import states
from heaters_resources.db.engine import Database
from heaters_resources.search import duplicates, space

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": NAN}, "adaptive threshold must be > 0 and finite, got nan"),
        ({"threshold": INF}, "adaptive threshold must be > 0 and finite, got inf"),
        ({"threshold": 0.0}, "adaptive threshold must be > 0"),
        ({"threshold": -5}, "adaptive threshold must be > 0"),
        ({"detector": "content", "threshold": 255.5}, "content threshold must be > 0 and <= 255"),
        ({"detector": "histogram", "threshold": 1.2}, "histogram threshold must be > 0 and <= 1"),
        ({"detector": "histogram", "threshold": 0}, "histogram threshold must be > 0"),
        ({"threshold": True}, "threshold must be > 0"),
        ({"threshold": "3"}, "threshold must be > 0"),
        ({"analysis_width": 0}, "analysis_width must be an integer >= 16 pixels, got 0"),
        ({"analysis_width": 15}, "analysis_width must be an integer >= 16 pixels, got 15"),
        ({"analysis_width": 160.0}, "analysis_width must be an integer"),
        ({"min_scene_len": NAN}, "min_scene_len must be a finite number of seconds >= 0"),
        ({"min_scene_len": INF}, "min_scene_len must be a finite number of seconds >= 0"),
        ({"min_scene_len": -0.5}, "min_scene_len must be a finite number of seconds >= 0"),
        ({"workers": 0}, "workers must be an integer >= 1, got 0"),
        ({"workers": -2}, "workers must be an integer >= 1"),
        ({"detector": "magic"}, "unknown detector 'magic'"),
    ],
)
def test_detect_scenes_refuses(kwargs: dict[str, Any], message: str, tmp_path: Path) -> None:
    """Refused before the file is even opened (it does not exist here)."""
    with pytest.raises(InvalidInputError) as info:
        detect_scenes(tmp_path / "never-opened.mp4", **kwargs)
    assert message in info.value.message and info.value.kind == "invalid_input"


def test_only_none_means_the_default() -> None:
    """0 used to be read as "the default width"; now only None is."""
    assert check_parameters("adaptive", None, 1.0, None, None) == (3.0, 160)
    assert check_parameters("histogram", None, 0.0, 16, 1) == (0.6, 16)
    assert check_parameters("content", 255, 2.5, 640, 8) == (255.0, 640)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": NAN}, "threshold must be a cosine distance > 0 and <= 2, got nan"),
        ({"threshold": INF}, "threshold must be a cosine distance > 0 and <= 2, got inf"),
        ({"threshold": 0.0}, "threshold must be a cosine distance > 0 and <= 2, got 0.0"),
        ({"threshold": -0.1}, "got -0.1"),
        ({"threshold": 2.5}, "got 2.5"),
        ({"threshold": 0.05, "per_clip": 0}, "need per_clip >= 1"),
        ({"threshold": 0.05, "limit": -1}, "limit >= 0"),
        ({"threshold": 0.05, "check_recall": -1}, "check_recall >= 0"),
        ({"threshold": 0.05, "nprobe": 0}, "nprobe >= 1"),
    ],
)
def test_near_duplicates_refuses(db: Database, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        duplicates.find_near_duplicates(db, **kwargs)
    assert message in info.value.message


def test_an_unknown_space_is_named_with_the_stored_ones(db: Database) -> None:
    """`near-duplicates --model typo` used to answer "no pairs"; the CLI now checks the space
    first and lists what is stored."""
    with pytest.raises(InvalidInputError, match="stored spaces: none yet"):
        space.require_stored_space(db, "no/such-model", "keyframe_multi_avg")
    vid = states.create_source_video(db, "/v.mp4")
    states.start_downloading(db, vid)
    states.complete_downloading(
        db, vid, original_key="o.mp4", fps=25.0, frame_count=50, duration_s=2.0
    )
    states.start_splicing(db, vid)
    [cid] = states.create_clips_from_splice(db, vid, [states.ClipSpec(0, 50)])
    states.store_embedding(db, cid, [1.0, 0.0], model_name="test/m", generation_strategy="mid")
    space.require_stored_space(db, "test/m", "mid")
    with pytest.raises(InvalidInputError) as info:
        space.require_stored_space(db, "test/m", "keyframe_multi_avg")
    assert info.value.message.endswith("stored spaces: test/m / mid")
    assert space.stored_spaces(db) == [("test/m", "mid")]
