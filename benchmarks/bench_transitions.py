"""Shot boundaries beyond hard cuts: F1 per transition kind, flash false cuts, and speed.

Edited footage from ``benchmarks.eval_footage`` (pieces of Big Buck Bunny, (c) Blender
Foundation, CC BY 3.0, and lavfi sources; hard cuts, dissolves, fades through black and white,
wipes, flash frames inside shots, short shots), one file per seed, the truth from how it was
built. ``--seeds`` are the seeds the thresholds were tuned on; ``--holdout`` seeds are reported
apart (the detector's constants were not chosen on them).

Contenders, each on every file:

- ``heaters adaptive`` / ``heaters content``: :func:`detect_scenes` as shipped (gradual
  transitions and flashes, ``short_policy="keep"``),
- ``heaters adaptive (hard cuts)`` / ``heaters content (hard cuts)``: the same detectors with
  ``gradual=False, short_policy="merge"``: the behaviour before issue 11 ("today"),
- ``PySceneDetect adaptive`` / ``PySceneDetect content``: PySceneDetect 0.7's defaults,
- ``transnetv2`` (``--transnet``, the ``ml`` extra): ``detect_scenes(detector="transnetv2")``,
  the network's cuts (slow on a CPU: 45-85 frames/s here, so off by default).

A cut counts when it falls inside a transition (first..last frame) +-``--tolerance`` frames
(2); one cut per transition, so a second cut inside one dissolve is a false cut; a cut at a
flash is a false cut charged to ``flash``. Speed: the first file, every contender and a plain
``ffmpeg -i FILE -f null -`` decode once per round (``--repeat`` rounds, the best time of each
kept), reported as frames/s and as a ratio to the plain decode of the same round set.

    .venv/bin/python -m benchmarks.bench_transitions              # 1,2,3 + held-out 7, 720p
    .venv/bin/python -m benchmarks.bench_transitions --seeds 1 --holdout 2 --size 320x180
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.eval_footage import KINDS, EvalFootage, make_eval_footage, match_cuts, scores
from heaters_media.scenes import detect_scenes

ROWS = (*KINDS, "gradual", "all")


def plain_decode(path: Path) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path)]
    subprocess.run([*cmd, "-f", "null", "-"], check=True)


def pyscenedetect(path: Path, kind: str) -> list[int]:
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    detector = AdaptiveDetector() if kind == "adaptive" else ContentDetector()
    scenes = detect(str(path), detector, show_progress=False)
    return [s[0].frame_num for s in scenes[1:]]


def heaters(path: Path, detector: str, gradual: bool) -> list[int]:
    policy = "keep" if gradual else "merge"
    result = detect_scenes(path, detector=detector, gradual=gradual, short_policy=policy)
    return [t["cut"] for t in result.metadata["transitions"]]


def transnetv2(path: Path) -> list[int]:
    result = detect_scenes(path, detector="transnetv2", short_policy="keep")
    return list(result.cut_frames)


#: Set by --transnet: TransNetV2 joins the contenders.
WITH_TRANSNET: list[bool] = [False]


def contenders(path: Path, with_pyscenedetect: bool) -> dict[str, Callable[[], list[int]]]:
    rows: dict[str, Callable[[], list[int]]] = {}
    for det in ("adaptive", "content"):
        rows[f"heaters {det}"] = functools.partial(heaters, path, det, True)
        rows[f"heaters {det} (hard cuts)"] = functools.partial(heaters, path, det, False)
    if with_pyscenedetect:
        for det in ("adaptive", "content"):
            rows[f"PySceneDetect {det}"] = functools.partial(pyscenedetect, path, det)
    if WITH_TRANSNET[0]:
        rows["transnetv2"] = functools.partial(transnetv2, path)
    return rows


def _add(total: dict[str, dict[str, int]], table: dict[str, dict[str, float]]) -> None:
    for kind, row in table.items():
        acc = total.setdefault(kind, {"tp": 0, "fp": 0, "fn": 0})
        for key in ("tp", "fp", "fn"):
            acc[key] += int(row[key])
        if kind in KINDS[1:]:
            acc = total.setdefault("gradual", {"tp": 0, "fp": 0, "fn": 0})
            for key in ("tp", "fp", "fn"):
                acc[key] += int(row[key])


def _finish(total: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    return {k: {**v, **scores(v["tp"], v["fp"], v["fn"])} for k, v in total.items()}


def accuracy(
    files: list[EvalFootage], names: list[str], with_pyscenedetect: bool, tolerance: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Per contender: per kind (and "gradual", "all", "flash") counts and F1 over ``files``."""
    totals: dict[str, dict[str, dict[str, int]]] = {name: {} for name in names}
    for footage in files:
        for name, fn in contenders(footage.path, with_pyscenedetect).items():
            table = match_cuts(fn(), footage.transitions, tolerance, footage.flashes)
            _add(totals[name], table)
    return {name: _finish(t) for name, t in totals.items()}


def speed(path: Path, frames: int, repeat: int, with_pyscenedetect: bool) -> dict[str, Any]:
    """Best of ``repeat`` rounds; every round runs the plain decode and every contender once."""
    runs: dict[str, Callable[[], Any]] = {"plain decode": lambda: plain_decode(path)}
    runs.update(contenders(path, with_pyscenedetect))
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    plain = best["plain decode"]
    return {
        name: {
            "seconds": round(secs, 3),
            "fps": round(frames / secs, 1),
            "vs_plain_decode": round(plain / secs, 2),
        }
        for name, secs in best.items()
    }


def _print_table(title: str, result: dict[str, dict[str, dict[str, float]]]) -> None:
    print(f"\n{title}: F1 (tp/fp/fn) per kind; flash = false cuts at flash frames")
    head = "".join(f"{k:>17}" for k in ROWS)
    print(f"{'contender':30}{head}{'flash':>7}")
    for name, table in result.items():
        cells = ""
        for kind in ROWS:
            r = table.get(kind, {"f1": 1.0, "tp": 0, "fp": 0, "fn": 0})
            cells += f"{r['f1']:>6.3f} ({r['tp']}/{r['fp']}/{r['fn']})".rjust(17)
        print(f"{name:30}{cells}{int(table.get('flash', {}).get('fp', 0)):>7}")


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (tuning set)")
    ap.add_argument("--holdout", default="7", help="comma-separated held-out seeds ('' for none)")
    ap.add_argument("--size", default="1280x720", help="WxH of the generated footage")
    ap.add_argument("--per-kind", type=int, default=4, help="joints of each kind per file")
    ap.add_argument("--tolerance", type=int, default=2, help="frames around a transition")
    ap.add_argument("--repeat", type=int, default=2, help="speed rounds; best time kept")
    ap.add_argument("--no-pyscenedetect", action="store_true", help="leave PySceneDetect out")
    ap.add_argument("--transnet", action="store_true", help="add TransNetV2 (the ml extra)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON line too")
    args = ap.parse_args(argv)
    WITH_TRANSNET[0] = args.transnet
    w, h = (int(x) for x in args.size.lower().split("x"))
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    holdout = [int(x) for x in args.holdout.split(",") if x.strip()]
    with_psd = not args.no_pyscenedetect
    load_before = _loadavg()
    print(f"{os.cpu_count()} CPUs; load average {load_before}; footage {w}x{h}")
    with tempfile.TemporaryDirectory(prefix="bench-transitions-") as tmp:
        made: dict[int, EvalFootage] = {}
        for seed in seeds + holdout:
            made[seed] = make_eval_footage(
                Path(tmp) / f"edit_{seed}.mp4", seed=seed, per_kind=args.per_kind, size=(w, h)
            )
            f = made[seed]
            print(
                f"seed {seed}: {f.frames} frames, {len(f.transitions)} transitions, "
                f"{len(f.flashes)} flashes, {sum(s.short for s in f.shots)} short shots"
            )
        names = list(contenders(made[seeds[0]].path, with_psd))
        tuned = accuracy([made[s] for s in seeds], names, with_psd, args.tolerance)
        held = accuracy([made[s] for s in holdout], names, with_psd, args.tolerance)
        first = made[seeds[0]]
        timing = speed(first.path, first.frames, args.repeat, with_psd)
    load_after = _loadavg()
    _print_table(f"seeds {seeds}", tuned)
    if holdout:
        _print_table(f"held-out seeds {holdout}", held)
    print(f"\nspeed on seed {seeds[0]} ({first.frames} frames {w}x{h}), best of {args.repeat}:")
    for name, row in timing.items():
        print(f"  {name:30} {row['fps']:>8} fps {row['seconds']:>8} s  {row['vs_plain_decode']}x")
    print(f"load average before {load_before}, after {load_after}")
    if args.json:
        out = {
            "seeds": seeds,
            "holdout": holdout,
            "size": [w, h],
            "cpus": os.cpu_count(),
            "repeat": args.repeat,
            "tolerance": args.tolerance,
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "accuracy": tuned,
            "holdout_accuracy": held,
            "speed": timing,
            "footage": {str(s): f.to_json() for s, f in made.items()},
        }
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
