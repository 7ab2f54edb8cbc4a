"""The MP4/MOV sample-index check behind probe (heaters_media/mp4index.py): real files from
ffmpeg pass (faststart or not, MOV, with audio, fragmented ones skipped), and each kind of
damage the packet count misses is named: a cut in the last bytes, chunk offsets past the
end, a garbage sample-size table, an index cut short."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from heaters_media.errors import CorruptMediaError
from heaters_media.mp4index import sample_index_problem
from heaters_media.probe import probe
from tests.media_factory import make_video


def _box(data: bytes, kind: bytes) -> tuple[int, int]:
    at = data.index(kind) - 4
    return at, struct.unpack(">I", data[at : at + 4])[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mp4index")
    plain = make_video(folder / "plain.mp4", [20, 25], size=(96, 54))  # H.264 + AAC
    out = {"plain": plain}
    for name, args in {
        "faststart.mp4": ["-c", "copy", "-movflags", "+faststart"],
        "moov_at_end.mp4": ["-c", "copy"],
        "container.mov": ["-c", "copy", "-f", "mov"],
        "fragmented.mp4": ["-c", "copy", "-movflags", "frag_keyframe+empty_moov"],
    }.items():
        target = folder / name
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(plain), *args,
             str(target)],
            check=True,
        )  # fmt: skip
        out[name.split(".")[0]] = target
    return out


def test_real_files_pass(files: dict[str, Path]) -> None:
    for name, path in files.items():
        assert sample_index_problem(path) is None, name
        probe(path)  # and probe takes them


def test_each_kind_of_damage_is_named(files: dict[str, Path], tmp_path: Path) -> None:
    data = files["faststart"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:-1])  # one byte short: the last packet is incomplete
    assert f"of a {len(data) - 1}-byte file" in (sample_index_problem(cut) or "")
    with pytest.raises(CorruptMediaError, match="cut short, or a damaged index"):
        probe(cut)
    far = bytearray(data)
    at, size = _box(data, b"stco")
    far[at + 16 : at + size] = b"\x7f\xff\xff\xff" * ((size - 16) // 4)
    (tmp_path / "far.mp4").write_bytes(bytes(far))
    assert "run to byte" in (sample_index_problem(tmp_path / "far.mp4") or "")
    garbage = bytearray(data)
    at, size = _box(data, b"stsz")
    garbage[at + 12 : at + size] = b"\xff" * (size - 12)
    (tmp_path / "stsz.mp4").write_bytes(bytes(garbage))
    assert "more than a" in (sample_index_problem(tmp_path / "stsz.mp4") or "")
    head = tmp_path / "head.mp4"
    moov, moov_size = _box(data, b"moov")
    head.write_bytes(data[: moov + moov_size // 2])
    assert "the index (moov) runs past the end" in (sample_index_problem(head) or "")
