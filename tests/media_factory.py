"""Generate test videos with ffmpeg's lavfi sources, so cut positions are known exactly.

Each segment is a distinct synthetic source trimmed to an exact number of frames; segments are
concatenated into one constant-frame-rate H.264 file, so scene *k* starts at the sum of the
frame counts before it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

# Visually distinct moving sources (each animates, so there is motion inside every scene).
# The random ones (life, cellauto) are seeded: an unseeded grid made the life -> cellauto cut's
# histogram strength vary from run to run (0.42-0.55 against a 0.4 bar), so a test failed in CI
# one time in many. Ground truth must not depend on the clock. So are gradients (whose "random"
# colours ignore the seed in ffmpeg 5.1, hence two fixed colours, as far apart in luma as two
# random colours are on average) and the noise.
SOURCES = [
    "testsrc2=s={w}x{h}:r={fps}",
    "mandelbrot=s={w}x{h}:r={fps}",
    "smptehdbars=s={w}x{h}:r={fps},hue=H=t*1.5",
    "life=s={w}x{h}:r={fps}:seed=7:mold=10:ratio=0.3:death_color=#802020:life_color=#20c040",
    "cellauto=s={w}x{h}:r={fps}:seed=7:rule=110,negate",
    "rgbtestsrc=s={w}x{h}:r={fps},hue=H=t*2",
    "gradients=s={w}x{h}:r={fps}:speed=0.05:seed=7:c0=0x3060c0:c1=0x80a050",
    "color=c=0x3050a0:s={w}x{h}:r={fps},noise=alls=30:allf=t:all_seed=7",
]


def make_video(
    path: str | Path,
    frames: Sequence[int],
    *,
    fps: int = 25,
    size: tuple[int, int] = (320, 180),
    audio: bool = True,
    gop: int | None = None,
    preset: str = "veryfast",
    extra: Sequence[str] = (),
) -> Path:
    """Write a video whose scene *k* has ``frames[k]`` frames; return its path.

    ``gop`` fixes the key-frame interval (and disables scene-cut key frames) so that tests can
    place cuts on or off key frames deliberately.
    """
    path = Path(path)
    w, h = size
    inputs: list[str] = []
    chains = []
    for k, n in enumerate(frames):
        src = SOURCES[k % len(SOURCES)].format(w=w, h=h, fps=fps)
        inputs += ["-f", "lavfi", "-i", src]
        chains.append(
            f"[{k}:v]trim=end_frame={n},setpts=PTS-STARTPTS,format=yuv420p,"
            f"scale={w}:{h},setsar=1[v{k}]"
        )
    graph = ";".join(chains) + ";" + "".join(f"[v{k}]" for k in range(len(frames)))
    graph += f"concat=n={len(frames)}:v=1:a=0[v]"
    total = sum(frames)
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *inputs]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={total / fps}"]
    cmd += ["-filter_complex", graph, "-map", "[v]"]
    if audio:
        cmd += ["-map", f"{len(frames)}:a", "-c:a", "aac", "-b:a", "64k"]
    cmd += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-r", str(fps)]
    if gop:
        cmd += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    cmd += ["-frames:v", str(total), "-movflags", "+faststart", *extra, str(path)]
    subprocess.run(cmd, check=True)
    return path


def cut_frames_of(frames: Sequence[int]) -> list[int]:
    """First frame of every scene after the first."""
    cuts, acc = [], 0
    for n in frames[:-1]:
        acc += n
        cuts.append(acc)
    return cuts


def count_frames(path: str | Path) -> int:
    """Decoded video frame count, measured by ffprobe -count_frames (the ground truth)."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return int(out.split(",")[0])


def stream_info(path: str | Path) -> dict[str, str]:
    """codec_name, pix_fmt, profile of the first video stream."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,pix_fmt,profile",
            "-of",
            "default=nw=1",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.strip().splitlines())


def frame_signature(path: str | Path, index: int, size: tuple[int, int] = (32, 18)) -> bytes:
    """A tiny grayscale thumbnail of frame ``index`` (decoded from the start), to compare frames."""
    w, h = size
    return subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-vf",
            f"select=eq(n\\,{index}),scale={w}:{h}:flags=area,format=gray",
            "-fps_mode",
            "passthrough",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout


# Looks applied to pieces of a real shot to emulate an edit: each piece is a different "shot".
EDIT_LOOKS = [
    "null",
    "hflip",
    "crop=iw*0.6:ih*0.6,scale={w}:{h}",
    "crop=iw*0.5:ih*0.5:0:0,scale={w}:{h}",
    "eq=brightness=0.06:saturation=1.5",
    "hue=h=50",
    "reverse",
    "crop=iw*0.7:ih*0.7:iw*0.3:ih*0.3,scale={w}:{h},hflip",
    "eq=contrast=1.3:gamma=0.8",
    "hue=h=-40:s=0.7",
]


def _edit_pieces(
    segments: int, seed: int, min_len: int, max_len: int, source_frames: int
) -> list[tuple[int, int]]:
    """(start in the shot, length) of each piece: a function of the seed alone."""
    import random

    rng = random.Random(seed)
    pieces = []
    for _ in range(segments):
        n = rng.randint(min_len, min(max_len, source_frames))
        pieces.append((rng.randint(0, source_frames - n), n))
    return pieces


def edited_cuts(
    segments: int = 12,
    seed: int = 7,
    min_len: int = 30,
    max_len: int = 100,
    source_frames: int = 132,
) -> list[int]:
    """The cut frames :func:`make_edited_footage` will produce with these arguments, known
    before encoding (to choose a key-frame interval that puts no key frame on a cut)."""
    pieces = _edit_pieces(segments, seed, min_len, max_len, source_frames)
    return cut_frames_of([n for _, n in pieces])


def make_edited_footage(
    path: str | Path,
    source: str | Path,
    *,
    segments: int = 12,
    seed: int = 7,
    min_len: int = 30,
    max_len: int = 100,
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
    source_frames: int = 132,
    gop: int | None = None,
) -> tuple[Path, list[int]]:
    """Cut pieces of a real continuous shot, give each a different look, and concatenate them.

    Returns the file and the exact cut frames (first frame of every piece after the first).
    Consecutive pieces come from different times of the shot *and* have different looks, like
    shots of one edited scene, so cuts are real but not trivially different in colour.

    By default x264 places key frames itself (it tends to put one on each cut). ``gop`` fixes
    the key-frame interval instead (key frames only every ``gop`` frames, none for scene cuts),
    as in footage re-encoded by a platform; the same ``seed`` gives the same pieces either way.
    """
    w, h = size
    chains, lengths = [], []
    for k, (start, n) in enumerate(_edit_pieces(segments, seed, min_len, max_len, source_frames)):
        look = EDIT_LOOKS[k % len(EDIT_LOOKS)].format(w=w, h=h)
        chains.append(
            f"[s{k}]trim=start_frame={start}:end_frame={start + n},setpts=PTS-STARTPTS,"
            f"scale={w}:{h},{look},setsar=1,format=yuv420p[v{k}]"
        )
        lengths.append(n)
    graph = f"[0:v]split={segments}" + "".join(f"[s{k}]" for k in range(segments)) + ";"
    graph += ";".join(chains) + ";" + "".join(f"[v{k}]" for k in range(segments))
    graph += f"concat=n={segments}:v=1:a=0[v]"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-filter_complex",
            graph,
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-r",
            str(fps),
            "-pix_fmt",
            "yuv420p",
            *(["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"] if gop else []),
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
    )
    return Path(path), cut_frames_of(lengths)


def f1_score(found: Sequence[int], truth: Sequence[int], tolerance: int = 1) -> dict[str, float]:
    """Precision, recall and F1 of detected cut frames against the truth, +-tolerance frames."""
    unmatched = list(truth)
    tp = 0
    for c in found:
        hit = next((t for t in unmatched if abs(t - c) <= tolerance), None)
        if hit is not None:
            unmatched.remove(hit)
            tp += 1
    precision = tp / len(found) if found else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": len(found) - tp,
        "fn": len(truth) - tp,
    }
