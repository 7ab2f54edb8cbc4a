"""Edited evaluation footage with known shot boundaries, for scene detectors.

Real edits join shots with more than hard cuts: dissolves, fades through black or white, wipes;
they also hold flash frames inside a continuous shot and shots of a few frames. A detector
tuned on hard cuts only is blind to all of that, so this module builds such edits, seeded, with
the ground truth taken from how each edit was built (not from any detector).

Shots come from pieces of *Big Buck Bunny* ((c) copyright 2008, Blender Foundation,
www.bigbuckbunny.org, CC BY 3.0, https://creativecommons.org/licenses/by/3.0/): the shots of
the bundled sample (``heaters_media/samples``) and the continuous 720p shot of ``tests/data``,
each piece with a different look (``tests.media_factory.EDIT_LOOKS``), and from ffmpeg's lavfi
sources (``tests.media_factory.SOURCES``). Joints are made by ffmpeg itself: ``concat`` (hard
cut), ``xfade`` (``fade``/``dissolve``, ``fadeblack``/``fadewhite``, wipes and slides) or a
``fade`` out and in through a colour with a few held frames.

Frame arithmetic, checked on flat colours by ``tests/media/test_transitions.py``: ``xfade``
with an N-frame duration starting at frame O of the joined output mixes frames O+1 .. O+N-1
(wipes and slides towards some edges already show a line of the incoming shot at O, so the
truth starts at O) and shows the incoming shot pure from O+N; the output is N frames shorter
than the two pieces. ``fade`` out over the last N frames leaves the first of them pure;
``fade`` in over the first N frames shows the colour alone on the first.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heaters_media.samples import SAMPLE_CUTS, SAMPLE_VIDEO
from tests.media_factory import EDIT_LOOKS, SOURCES

SHOT_720P = Path(__file__).resolve().parents[1] / "tests" / "data" / "bbb_720p_5s.mp4"
SAMPLE_FRAMES = 536

#: Every kind of joint; all but "cut" are gradual.
KINDS = ("cut", "dissolve", "fade_black", "fade_white", "wipe")
GRADUAL = KINDS[1:]
#: The xfade transitions behind each gradual kind (ffmpeg 5.1 has all of these).
XFADES = {
    "dissolve": ("fade", "dissolve"),
    "fade_black": ("fadeblack",),
    "fade_white": ("fadewhite",),
    "wipe": (
        "wipeleft",
        "wiperight",
        "wipeup",
        "wipedown",
        "slideleft",
        "slideright",
        "slideup",
        "slidedown",
        "smoothleft",
        "smoothup",
        "circleopen",
        "horzopen",
        "vertclose",
        "diagtl",
        "wipebr",
    ),
}
FADE_COLOURS = {"fade_black": "black", "fade_white": "white"}


@dataclass(frozen=True)
class Transition:
    """One joint between two shots, in frames of the edited file.

    ``first``..``last`` (inclusive) are the frames that belong to neither shot alone (for a hard
    cut both are the first frame of the new shot); ``cut`` is where one cut belongs (the middle).
    A detector's cut at ``c`` is right when ``first - tol <= c <= last + tol``.
    """

    kind: str
    style: str
    first: int
    last: int
    cut: int


@dataclass(frozen=True)
class Flash:
    """Frames ``first``..``last`` of one continuous shot replaced by a light flash: no cut."""

    first: int
    last: int
    alpha: float


@dataclass(frozen=True)
class Shot:
    source: str
    look: str
    start: int  # first frame taken from the source
    frames: int  # frames taken from the source (transitions overlap some of them)
    short: bool


@dataclass
class EvalFootage:
    path: Path
    seed: int
    fps: int
    size: tuple[int, int]
    frames: int
    transitions: list[Transition]
    flashes: list[Flash]
    shots: list[Shot] = field(repr=False)

    def truth(self, kinds: tuple[str, ...] = KINDS) -> list[Transition]:
        return [t for t in self.transitions if t.kind in kinds]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


@dataclass
class _Source:
    name: str
    input_args: list[str]
    ranges: list[tuple[int, int]]  # [start, end) frame ranges that are one continuous shot
    looks: tuple[str, ...]


def _sources(size: tuple[int, int], fps: int, lavfi: Sequence[str] | None) -> list[_Source]:
    w, h = size
    if lavfi is not None:  # only these sources (e.g. flat colours, to check the truth)
        return [
            _Source(
                f"src{k}",
                ["-f", "lavfi", "-i", src.format(w=w, h=h, fps=fps)],
                [(0, 10_000)],
                ("null",),
            )
            for k, src in enumerate(lavfi)
        ]
    sample_bounds = [0, *SAMPLE_CUTS, SAMPLE_FRAMES]
    looks = tuple(EDIT_LOOKS)
    out = [
        _Source("bbb720", ["-i", str(SHOT_720P)], [(0, 132)], looks),
        _Source(
            "bbb_sample",
            ["-i", str(SAMPLE_VIDEO)],
            list(itertools.pairwise(sample_bounds)),
            looks,
        ),
    ]
    for k, src in enumerate(SOURCES):
        lavfi = src.format(w=w, h=h, fps=fps)
        out.append(_Source(f"lavfi{k}", ["-f", "lavfi", "-i", lavfi], [(0, 10_000)], ("null",)))
    return out


@dataclass
class _Joint:
    kind: str
    style: str
    frames: int  # transition length (0 for a cut)
    hold: int = 0  # held colour frames between a fade out and in
    fade_out: int = 0
    fade_in: int = 0
    short_after: bool = False  # the shot after this joint is a short one


def _plan_joints(
    rng: random.Random, per_kind: int, short_shots: int, min_len: int, max_len: int
) -> list[_Joint]:
    kinds = [k for k in KINDS for _ in range(per_kind)]
    rng.shuffle(kinds)
    joints: list[_Joint] = []
    for kind in kinds:
        if kind == "cut":
            joints.append(_Joint("cut", "concat", 0))
            continue
        n = rng.randint(min_len, max_len)
        if kind in FADE_COLOURS and rng.random() < 0.4:
            hold = rng.choice([0, 0, 1, 3])
            out_n = max(2, (n - hold) // 2)
            in_n = max(1, n - hold - out_n)
            joints.append(_Joint(kind, "fade-out-in", out_n + hold + in_n, hold, out_n, in_n))
        else:
            joints.append(_Joint(kind, rng.choice(XFADES[kind]), n))
    for _ in range(short_shots):  # a short shot: hard cuts on both sides
        at = rng.randint(0, len(joints))
        joints[at:at] = [_Joint("cut", "concat", 0, short_after=True), _Joint("cut", "concat", 0)]
    return joints


def _touched(joint: _Joint | None, side: str) -> int:
    """Frames of a piece that a joint changes on that side ("in": its start, "out": its end).

    An xfade overlaps its N frames of both pieces; a fade out/in darkens (or lightens) the
    outgoing piece's last frames and the incoming piece's first ones.
    """
    if joint is None or joint.style == "concat":
        return 0
    if joint.style == "fade-out-in":
        return joint.fade_in if side == "in" else joint.fade_out
    return joint.frames


def make_eval_footage(
    path: str | Path,
    *,
    seed: int = 1,
    per_kind: int = 4,
    short_shots: int = 2,
    flashes: int = 3,
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
    transition_frames: tuple[int, int] = (8, 30),
    pure_frames: tuple[int, int] = (25, 70),
    short_frames: tuple[int, int] = (6, 15),
    crf: int = 20,
    sources: Sequence[str] | None = None,
) -> EvalFootage:
    """Write an edit of ``per_kind`` joints of every kind in :data:`KINDS` and return its truth.

    Shots between joints have ``pure_frames`` frames of their own (outside any transition);
    ``short_shots`` shots of ``short_frames`` frames sit between two hard cuts; ``flashes``
    shots get one to three flash frames well inside their pure part. Everything is a function
    of ``seed``. ``sources`` (lavfi templates with ``{w}``, ``{h}``, ``{fps}``) replaces the
    default mix of Big Buck Bunny pieces and ``SOURCES``.
    """
    rng = random.Random(seed)
    w, h = size
    pool = _sources(size, fps, sources)
    joints = _plan_joints(rng, per_kind, short_shots, *transition_frames)
    short_at = {k + 1 for k, joint in enumerate(joints) if joint.short_after}
    shots: list[Shot] = []
    pure: list[int] = []
    previous = ("", "")
    for k in range(len(joints) + 1):
        before = joints[k - 1] if k > 0 else None
        after = joints[k] if k < len(joints) else None
        own = rng.randint(*short_frames) if k in short_at else rng.randint(*pure_frames)
        n = own + _touched(before, "in") + _touched(after, "out")
        fitting = [
            (src, r)
            for src in pool
            for r in src.ranges
            if r[1] - r[0] >= n and src.name != previous[0]
        ]
        # Half the shots are real footage (when a piece fits), half synthetic.
        real = [f for f in fitting if f[0].name.startswith("bbb")]
        synthetic = [f for f in fitting if not f[0].name.startswith("bbb")]
        src, (lo, hi) = rng.choice(real if real and rng.random() < 0.5 else synthetic or real)
        look = rng.choice([lk for lk in src.looks if (src.name, lk) != previous])
        start = rng.randint(lo, min(hi - n, lo + 60))
        shots.append(Shot(src.name, look.format(w=w, h=h), start, n, k in short_at))
        pure.append(own)
        previous = (src.name, look)

    flash_list = _plan_flashes(rng, shots, pure, joints, flashes)
    graph, inputs, transitions, total, flash_frames = _graph(
        shots, joints, flash_list, pool, size, fps
    )
    out = Path(path)
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            *inputs,
            "-filter_complex",
            graph,
            "-map",
            "[out]",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            str(crf),
            "-pix_fmt",
            "yuv420p",
            "-r",
            str(fps),
            "-frames:v",
            str(total),
            "-movflags",
            "+faststart",
            str(out),
        ],
        check=True,
    )
    return EvalFootage(out, seed, fps, size, total, transitions, flash_frames, shots)


def _plan_flashes(
    rng: random.Random, shots: list[Shot], pure: list[int], joints: list[_Joint], count: int
) -> dict[int, tuple[int, int, float]]:
    """shot index -> (first frame of the flash in the piece, frames, alpha)."""
    room = [k for k, s in enumerate(shots) if not s.short and pure[k] >= 30]
    chosen = rng.sample(room, min(count, len(room)))
    out = {}
    for k in chosen:
        lead = _touched(joints[k - 1] if k > 0 else None, "in")
        length = rng.randint(1, 3)
        at = lead + rng.randint(12, pure[k] - 12 - length)
        out[k] = (at, length, round(rng.uniform(0.75, 1.0), 2))
    return out


def _graph(
    shots: list[Shot],
    joints: list[_Joint],
    flashes: dict[int, tuple[int, int, float]],
    pool: list[_Source],
    size: tuple[int, int],
    fps: int,
) -> tuple[str, list[str], list[Transition], int, list[Flash]]:
    """The filter graph joining the pieces, its inputs, and the truth in output frames."""
    w, h = size
    by_name = {s.name: s for s in pool}
    inputs: list[str] = []
    chains: list[str] = []
    for k, shot in enumerate(shots):
        inputs += by_name[shot.source].input_args
        chain = (
            f"[{k}:v]trim=start_frame={shot.start}:end_frame={shot.start + shot.frames},"
            f"scale={w}:{h},{shot.look},setsar=1,settb=1/{fps},setpts=N,format=yuv420p"
        )
        if k in flashes:
            at, length, alpha = flashes[k]
            chain += (
                f",drawbox=x=0:y=0:w=iw:h=ih:color=white@{alpha}:t=fill"
                f":enable='between(n,{at},{at + length - 1})'"
            )
        before = joints[k - 1] if k > 0 else None
        after = joints[k] if k < len(joints) else None
        if after is not None and after.style == "fade-out-in":
            colour = FADE_COLOURS[after.kind]
            chain += (
                f",fade=t=out:start_frame={shot.frames - after.fade_out}"
                f":nb_frames={after.fade_out}:color={colour}"
            )
        if before is not None and before.style == "fade-out-in":
            colour = FADE_COLOURS[before.kind]
            chain += f",fade=t=in:start_frame=0:nb_frames={before.fade_in}:color={colour}"
        chains.append(chain + f"[p{k}]")
    retime = f"settb=1/{fps},setpts=N"  # concat's clock is microseconds; xfade wants 1/fps
    holds = 0
    cur, pos = "p0", shots[0].frames
    piece_start = [0]
    transitions: list[Transition] = []
    for j, joint in enumerate(joints):
        nxt = f"p{j + 1}"
        label = f"j{j}"
        if joint.style == "concat":
            chains.append(f"[{cur}][{nxt}]concat=n=2:v=1:a=0,{retime}[{label}]")
            transitions.append(Transition("cut", "concat", pos, pos, pos))
            piece_start.append(pos)
            pos += shots[j + 1].frames
        elif joint.style == "fade-out-in":
            parts = [cur]
            if joint.hold:
                hold = f"h{holds}"
                inputs += [
                    "-f",
                    "lavfi",
                    "-i",
                    f"color=c={FADE_COLOURS[joint.kind]}:s={w}x{h}:r={fps}",
                ]
                chains.append(
                    f"[{len(shots) + holds}:v]trim=end_frame={joint.hold},setsar=1,"
                    f"settb=1/{fps},setpts=N,format=yuv420p[{hold}]"
                )
                holds += 1
                parts.append(hold)
            parts.append(nxt)
            joined = "".join(f"[{p}]" for p in parts)
            chains.append(f"{joined}concat=n={len(parts)}:v=1:a=0,{retime}[{label}]")
            first = pos - joint.fade_out + 1
            last = pos + joint.hold + joint.fade_in - 1
            transitions.append(
                Transition(joint.kind, joint.style, first, last, (first + last + 1) // 2)
            )
            piece_start.append(pos + joint.hold)
            pos += joint.hold + shots[j + 1].frames
        else:
            n = joint.frames
            offset = pos - n
            chains.append(
                f"[{cur}][{nxt}]xfade=transition={joint.style}:duration={n / fps:.6f}"
                f":offset={offset / fps:.6f}[{label}]"
            )
            first, last = offset, offset + n - 1
            transitions.append(
                Transition(joint.kind, joint.style, first, last, (first + last + 1) // 2)
            )
            piece_start.append(offset)
            pos += shots[j + 1].frames - n
        cur = label
    chains.append(f"[{cur}]null[out]")
    flash_frames = [
        Flash(piece_start[k] + at, piece_start[k] + at + length - 1, alpha)
        for k, (at, length, alpha) in sorted(flashes.items())
    ]
    return ";".join(chains), inputs, transitions, pos, flash_frames


def match_cuts(
    found: list[int],
    truth: list[Transition],
    tolerance: int = 2,
    flashes: list[Flash] | tuple[Flash, ...] = (),
) -> dict[str, dict[str, float]]:
    """Per kind and overall: true positives, misses, false cuts, precision, recall, F1.

    A cut matches a transition when it falls in ``[first - tolerance, last + tolerance]``; each
    transition takes at most one cut (the nearest to its ``cut``), so a second cut in one
    dissolve is a false cut. A false cut at a flash (``flash_false_cuts``) is charged to
    ``"flash"``; another to the kind of the nearest transition within 30 frames, else to
    ``"none"`` (a cut inside a shot).
    """
    unmatched = sorted(found)
    hits: dict[int, int] = {}
    for t in sorted(truth, key=lambda t: t.last - t.first):  # narrow windows choose first
        inside = [c for c in unmatched if t.first - tolerance <= c <= t.last + tolerance]
        if inside:
            best = min(inside, key=lambda c: abs(c - t.cut))
            unmatched.remove(best)
            hits[id(t)] = best
    kinds = sorted({t.kind for t in truth} | {"all"})
    table: dict[str, dict[str, float]] = {
        k: {"tp": 0, "fn": 0, "fp": 0} for k in [*kinds, "flash", "none"]
    }
    for t in truth:
        key = "tp" if id(t) in hits else "fn"
        table[t.kind][key] += 1
        table["all"][key] += 1
    for c in unmatched:
        near = [t for t in truth if t.first - 30 <= c <= t.last + 30]
        kind = min(near, key=lambda t: abs(c - t.cut)).kind if near else "none"
        if any(_at_flash(c, f) for f in flashes):
            kind = "flash"
        table[kind]["fp"] += 1
        table["all"]["fp"] += 1
    for row in table.values():
        row.update(scores(int(row["tp"]), int(row["fp"]), int(row["fn"])))
    return table


def scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from counts (1.0 where nothing could be wrong)."""
    p = round(tp / (tp + fp), 3) if tp + fp else 1.0
    r = round(tp / (tp + fn), 3) if tp + fn else 1.0
    return {"precision": p, "recall": r, "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0}


def _at_flash(c: int, flash: Flash, reach: int = 2) -> bool:
    return flash.first - reach <= c <= flash.last + 1 + reach


def flash_false_cuts(found: list[int], footage: EvalFootage) -> int:
    """Cuts at a flash (inside it or within 2 frames of its ends): each one is false."""
    return sum(1 for c in found for f in footage.flashes if _at_flash(c, f))


def main() -> None:
    """Write one edit and print its truth as JSON (a quick look at what the generator does)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-kind", type=int, default=4)
    ap.add_argument("--size", default="1280x720")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    footage = make_eval_footage(args.out, seed=args.seed, per_kind=args.per_kind, size=(w, h))
    print(json.dumps(footage.to_json()))


if __name__ == "__main__":
    main()
