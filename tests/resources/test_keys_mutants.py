"""Object keys (`heaters_resources.store.keys`): every key the system writes is built here from
ids, frame numbers and short validated tokens. The orphan cleanup, the purge and both store
backends rely on the exact layout (ARCHITECTURE.md, "Object store layout"), so these tests pin
each key, each accepted boundary value and each refusal (with the argument it names)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from heaters_resources.store import keys


def test_every_key_of_the_layout() -> None:
    """The store layout of ARCHITECTURE.md, key by key: cleanup and purge find objects by these
    keys."""
    ident = keys.clip_identifier(7, 0, 250)
    assert ident == "7_0_250"
    assert keys.source_original_key(7, "mp4") == "source_videos/7/original.mp4"
    assert keys.source_normalized_key(7) == "source_videos/7/normalized.mp4"
    assert keys.clip_key(7, ident) == "clips/7/7_0_250.mp4"
    assert keys.clip_prefix(7, ident) == "clips/7/7_0_250/"
    assert keys.keyframe_key(7, ident, "multi", 25) == "clips/7/7_0_250/keyframes/multi_25.jpg"
    assert keys.sprite_key(7, ident, "w480_c5") == "clips/7/7_0_250/sprite/w480_c5.jpg"
    assert keys.sprite_metadata_key(7, ident, "w480_c5") == "clips/7/7_0_250/sprite/w480_c5.json"
    for key in (keys.source_original_key(7, "mp4"), keys.clip_key(7, ident)):
        assert key.startswith(keys.MANAGED_PREFIXES)


def test_identifier_round_trip() -> None:
    """Identifiers parse back into integer ids; anything else is refused."""
    assert keys.parse_clip_identifier(keys.clip_identifier(12, 30, 31)) == (12, 30, 31)
    assert keys.parse_clip_identifier("0_0_1") == (0, 0, 1)
    assert all(type(v) is int for v in keys.parse_clip_identifier("5_6_7"))
    for bad in ("5_6", "5_6_7_8", "a_1_2", "5-6-7", ""):
        with pytest.raises(ValueError, match="not a clip identifier"):
            keys.parse_clip_identifier(bad)


def test_ids_accept_zero_and_refuse_negatives_bools_and_non_ints() -> None:
    """Keys are built from non-negative integer ids only."""
    assert keys.source_normalized_key(0) == "source_videos/0/normalized.mp4"
    assert keys.clip_identifier(0, 0, 1) == "0_0_1"
    for bad in (-1, True, False, 2.0, "3", None):
        with pytest.raises(ValueError, match="invalid video id"):
            keys.source_normalized_key(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: keys.clip_identifier(-1, 0, 5), "invalid video id"),
        (lambda: keys.clip_identifier(1, -1, 5), "invalid start frame"),
        (lambda: keys.clip_identifier(1, 0, -5), "invalid end frame"),
        (lambda: keys.clip_identifier(1, 5, 5), r"empty clip range \[5, 5\)"),
        (lambda: keys.clip_identifier(1, 6, 5), r"empty clip range \[6, 5\)"),
        (lambda: keys.source_original_key(-2, "mp4"), "invalid video id"),
        (lambda: keys.source_normalized_key(-2), "invalid video id"),
    ],
)
def test_refusals_name_the_bad_argument(call: Callable[[], object], names: str) -> None:
    """A refused key says which argument was wrong."""
    with pytest.raises(ValueError, match=names):
        call()


def test_source_extension_is_normalised_then_checked() -> None:
    """Extensions come from user files: lower-cased, dot dropped, then only short alphanumerics
    pass."""
    assert keys.source_original_key(3, ".MKV") == "source_videos/3/original.mkv"
    assert keys.source_original_key(3, "WebM") == "source_videos/3/original.webm"
    assert keys.source_original_key(3, "12345678") == "source_videos/3/original.12345678"
    for bad in ("", "mp4.", "m p4", "123456789", "../x", "mp-4"):
        with pytest.raises(ValueError, match="invalid extension"):
            keys.source_original_key(3, bad)


def test_clip_keys_belong_to_their_video() -> None:
    """A clip identifier starts with its video id; a key under another video is refused."""
    with pytest.raises(ValueError, match="does not belong to video 4"):
        keys.clip_key(4, "3_10_20")
    with pytest.raises(ValueError, match="does not belong"):
        keys.clip_prefix(10, "3_10_20")  # 10 is the start frame, not the video
    with pytest.raises(ValueError, match="does not belong"):
        keys.sprite_key(20, "3_10_20", "p")
    with pytest.raises(ValueError, match="not a clip identifier"):
        keys.clip_key(3, "../3_10_20")


def test_keyframe_percentage_is_0_to_100_inclusive() -> None:
    """A keyframe position is a percentage of the clip."""
    assert keys.keyframe_key(3, "3_0_9", "multi", 0).endswith("/keyframes/multi_0.jpg")
    assert keys.keyframe_key(3, "3_0_9", "multi", 100).endswith("/keyframes/multi_100.jpg")
    for bad in (-1, 101):
        with pytest.raises(ValueError, match=f"keyframe percentage out of range: {bad}"):
            keys.keyframe_key(3, "3_0_9", "multi", bad)


@pytest.mark.parametrize("token", ["a", "A9", "9.b-c_d", "x" * 64])
def test_tokens_accepted(token: str) -> None:
    """Strategy and sprite-parameter tokens appear verbatim in keys."""
    assert keys.sprite_key(3, "3_0_9", token) == f"clips/3/3_0_9/sprite/{token}.jpg"
    assert keys.sprite_metadata_key(3, "3_0_9", token) == f"clips/3/3_0_9/sprite/{token}.json"
    assert keys.keyframe_key(3, "3_0_9", token, 5) == f"clips/3/3_0_9/keyframes/{token}_5.jpg"


@pytest.mark.parametrize("token", ["", ".hidden", "-x", "a b", "a/b", "a..b", "x" * 65])
def test_tokens_refused_with_their_role(token: str) -> None:
    """Tokens that could escape a folder or break a key are refused, naming the token's role."""
    with pytest.raises(ValueError, match="invalid sprite params"):
        keys.sprite_key(3, "3_0_9", token)
    with pytest.raises(ValueError, match="invalid sprite params"):
        keys.sprite_metadata_key(3, "3_0_9", token)
    with pytest.raises(ValueError, match="invalid strategy"):
        keys.keyframe_key(3, "3_0_9", token, 5)
