"""Bad media files for the hostile corpus, generated once per session into a folder.

Every file is derived from two small real videos made by ffmpeg here (one with its index at
the end, as a camera writes it; one with faststart, as the platform stores it), so the damage
is exact and repeatable: truncations at fixed offsets, bytes overwritten inside the `moov`
box, random bytes from a seeded generator, and inputs that are readable but no video (audio
only, a subtitle track only, one still image, a text file, a declared size of 60000x60000).
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
#: Where the good files are cut: fractions of their size, and a few absolute offsets.
TRUNCATE_AT = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9)
TRUNCATE_BYTES = (1, 8, 64, 700)


def _names() -> list[str]:
    """The names `bad_files` makes, known without making them (the tests are parametrized
    over them at collection time)."""
    names = ["zero_bytes.mp4", *(f"random_bytes.{e}" for e in ("mp4", "mkv", "mov", "webm", "avi"))]
    names += ["text.mp4", "html.mp4", "json.mkv", "utf16_text.mov", "only_ftyp.mp4"]
    for tag in ("moov_end", "faststart"):
        names += [f"truncated_{tag}_{int(f * 100):02d}pct.mp4" for f in TRUNCATE_AT]
        names += [f"truncated_{tag}_{n}b.mp4" for n in TRUNCATE_BYTES]
    names += ["truncated_faststart_98pct.mp4"]
    names += ["moov_garbage.mp4", "moov_stsz_ff.mp4", "moov_stco_far.mp4"]
    names += ["audio_only.mp4", "wav_as.mp4", "subtitles_only.mp4"]
    names += ["image.png", "jpeg_as.mp4", "huge_dimensions.y4m", "huge_dimensions_y4m.mp4"]
    names += ["folder.mp4", "fifo.mp4", "symlink_loop.mp4", "missing.mp4"]
    return [*names, "missing_unicode_\u00e9\u2603.mp4"]


def _ffmpeg(*args: str) -> None:
    subprocess.run([*FFMPEG, *args], check=True, timeout=60)


def good_videos(folder: Path) -> tuple[Path, Path]:
    """Two 2-second 96x64 H.264 + AAC MP4s: index at the end, and faststart (index first)."""
    late, early = folder / "good_moov_end.mp4", folder / "good_faststart.mp4"
    common = [
        "-f", "lavfi", "-i", "testsrc2=s=96x64:r=12",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050",
        "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "6",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k",
    ]  # fmt: skip
    _ffmpeg(*common, str(late))
    _ffmpeg(*common, "-movflags", "+faststart", str(early))
    return late, early


def _box(data: bytes, name: bytes) -> tuple[int, int]:
    """(offset, size) of the first box called `name` (searched as bytes: good enough here)."""
    at = data.index(name) - 4
    return at, int.from_bytes(data[at : at + 4], "big")


def bad_files(folder: Path) -> dict[str, Path]:
    """Every bad file by case name (the name is the test id's suffix)."""
    folder.mkdir(parents=True, exist_ok=True)
    late, early = good_videos(folder)
    rng = random.Random(12)
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        path = folder / name
        path.write_bytes(data)
        files[name] = path

    write("zero_bytes.mp4", b"")
    for ext in ("mp4", "mkv", "mov", "webm", "avi"):
        write(f"random_bytes.{ext}", rng.randbytes(48_000))
    write("text.mp4", b"this is not a video, only text\n" * 400)
    write("html.mp4", b"<!doctype html><html><body>404 Not Found</body></html>\n")
    write("json.mkv", b'{"status": "error", "scenes": []}\n')
    write("utf16_text.mov", "a text file in UTF-16\n".encode("utf-16") * 100)
    write("only_ftyp.mp4", late.read_bytes()[:32])

    for source, tag in ((late, "moov_end"), (early, "faststart")):
        data = source.read_bytes()
        for fraction in TRUNCATE_AT:
            write(
                f"truncated_{tag}_{int(fraction * 100):02d}pct.mp4",
                data[: int(len(data) * fraction)],
            )
        for n in TRUNCATE_BYTES:
            write(f"truncated_{tag}_{n}b.mp4", data[:n])
    # Cut in the last packets: the index (at the front) still promises every frame.
    write("truncated_faststart_98pct.mp4", early.read_bytes()[: int(early.stat().st_size * 0.98)])

    data = early.read_bytes()
    moov, size = _box(data, b"moov")
    garbage = bytearray(data)
    garbage[moov + 8 : moov + size] = rng.randbytes(size - 8)
    write("moov_garbage.mp4", bytes(garbage))
    no_stsz = bytearray(data)
    stsz, stsz_size = _box(data, b"stsz")
    no_stsz[stsz + 8 : stsz + stsz_size] = b"\xff" * (stsz_size - 8)
    write("moov_stsz_ff.mp4", bytes(no_stsz))
    no_stco = bytearray(data)
    stco, stco_size = _box(data, b"stco")
    no_stco[stco + 16 : stco + stco_size] = b"\x7f\xff\xff\xff" * ((stco_size - 16) // 4)
    write("moov_stco_far.mp4", bytes(no_stco))

    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-c:a", "aac",
            str(folder / "audio_only.mp4"))  # fmt: skip
    files["audio_only.mp4"] = folder / "audio_only.mp4"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-f", "wav",
            str(folder / "wav_as.mp4"))  # fmt: skip
    files["wav_as.mp4"] = folder / "wav_as.mp4"
    srt = folder / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    _ffmpeg("-i", str(srt), "-c:s", "mov_text", str(folder / "subtitles_only.mp4"))
    files["subtitles_only.mp4"] = folder / "subtitles_only.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "1", str(folder / "image.png"))
    files["image.png"] = folder / "image.png"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "1", "-f", "mjpeg",
            str(folder / "jpeg_as.mp4"))  # fmt: skip
    files["jpeg_as.mp4"] = folder / "jpeg_as.mp4"
    write(
        "huge_dimensions.y4m",
        b"YUV4MPEG2 W60000 H60000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096,
    )
    write("huge_dimensions_y4m.mp4", (folder / "huge_dimensions.y4m").read_bytes())

    (folder / "folder.mp4").mkdir(exist_ok=True)
    files["folder.mp4"] = folder / "folder.mp4"
    fifo = folder / "fifo.mp4"
    if not fifo.exists():
        os.mkfifo(fifo)
    files["fifo.mp4"] = fifo
    loop = folder / "symlink_loop.mp4"
    if not loop.is_symlink():
        loop.symlink_to(loop.name)
    files["symlink_loop.mp4"] = loop
    files["missing.mp4"] = folder / "missing.mp4"
    files["missing_unicode_\u00e9\u2603.mp4"] = folder / "missing_unicode_\u00e9\u2603.mp4"
    return files


BAD_FILES = _names()
