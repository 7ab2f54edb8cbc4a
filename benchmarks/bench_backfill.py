"""A 500-clip re-embedding backfill: Dagster runs vs. direct calls, in the same run.

Builds N approved clips whose keyframes are real JPEGs (frames of the bundled sample) in a
temporary HEATERS_HOME (embedded Postgres, local object store), embeds them once, then
re-embeds all of them with ``overwrite``:

- ``direct``: ``heaters_resources.steps.embeddings.embed_clips`` over all N clips in one
  process;
- ``dagster``: what a backfill of ``clip_embedding`` does with its backfill policy
  (``VIDEOS_PER_EMBEDDING_RUN`` video partitions per run): runs of ``embed_clips_job`` over
  ranges of video partitions, each launched with ``dagster job execute`` (process start-up,
  instance and event log writes included).

The clips are spread over ``--videos`` videos (the partitions). Usage:
``python -m benchmarks.bench_backfill [--clips 500] [--videos 10] [--model heaters/pixels-v1]``.
The default model is the weights-free descriptor (cheap per image), so this shows the
per-run overhead at its most visible; pass a CLIP/DINOv2 folder with ``--model-path``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from heaters_media.samples import SAMPLE_VIDEO
from heaters_resources import states
from heaters_resources.db.embedded_pg import ensure_server, stop_server
from heaters_resources.db.engine import Database
from heaters_resources.orchestration import names
from heaters_resources.orchestration.instance import (
    dagster_command,
    prepare_dagster_home,
)
from heaters_resources.orchestration.ranges import VIDEOS_PER_EMBEDDING_RUN as PER_RUN
from heaters_resources.settings import Settings
from heaters_resources.steps.embeddings import embed_clips
from heaters_resources.store import keys
from heaters_resources.store.objects import LocalObjectStore


def frames(out: Path, count: int = 24) -> list[Path]:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(SAMPLE_VIDEO),
            "-vf",
            f"select=not(mod(n\\,{536 // count}))",
            "-fps_mode",
            "passthrough",
            "-frames:v",
            str(count),
            str(out / "f%03d.jpg"),
        ],
        check=True,
    )
    return sorted(out.glob("f*.jpg"))


def build_library(
    db: Database, store: LocalObjectStore, n: int, images: list[Path], videos: int
) -> tuple[list[int], list[str]]:
    """N approved clips over ``videos`` videos, each clip with three 'multi' keyframes in the
    store; returns (video ids, clip identifiers)."""
    vids, idents = [], []
    per_video = -(-n // videos)
    for lo in range(0, n, per_video):
        vid, made = _video(db, store, min(per_video, n - lo), images, lo)
        vids.append(vid)
        idents += made
    return vids, idents


def _video(
    db: Database, store: LocalObjectStore, n: int, images: list[Path], offset: int
) -> tuple[int, list[str]]:
    vid = states.create_source_video(db, "bench://backfill")
    states.start_downloading(db, vid)
    states.complete_downloading(
        db, vid, original_key=keys.source_original_key(vid, "mp4"), fps=25.0, frame_count=n * 25
    )
    states.start_splicing(db, vid)
    ids = states.create_clips_from_splice(
        db, vid, [states.ClipSpec(i * 25, i * 25 + 25) for i in range(n)]
    )
    idents = [keys.clip_identifier(vid, i * 25, i * 25 + 25) for i in range(n)]
    artifacts = {}
    for k, (cid, ident) in enumerate(zip(ids, idents, strict=True)):
        specs = []
        for j, pct in enumerate((25, 50, 75)):
            key = keys.keyframe_key(vid, ident, "multi", pct)
            store.upload_file(images[((offset + k) * 3 + j) % len(images)], key)
            specs.append(states.ArtifactSpec("keyframe", "multi", key, tag=str(pct)))
        artifacts[cid] = specs
    states.start_keyframing_many(db, ids)
    states.complete_keyframing_many(db, artifacts)
    states.start_sprite_generation_many(db, ids)
    states.complete_sprite_generation_many(db, {cid: [] for cid in ids})
    for cid in ids:
        states.approve_clip(db, cid, "bench")
    return vid, idents


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clips", type=int, default=500)
    ap.add_argument("--videos", type=int, default=10, help="videos (partitions) the clips are in")
    ap.add_argument("--model", default="heaters/pixels-v1")
    ap.add_argument("--model-path", default=None)
    ap.add_argument(
        "--random-clip",
        action="store_true",
        help="a randomly initialized CLIP ViT-B/32 (real architecture and cost)",
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        home = Path(tmp) / "home"
        settings = Settings.from_env({"HEATERS_HOME": str(home)})
        db = Database(ensure_server(home).url)
        try:
            db.ensure_migrated()
            store = LocalObjectStore(settings.objects_dir)
            (Path(tmp) / "jpg").mkdir()
            vids, idents = build_library(
                db, store, args.clips, frames(Path(tmp) / "jpg"), args.videos
            )
            if args.random_clip:
                from benchmarks.bench_embed import random_vit_b32

                args.model = "bench/clip-vit-b32-random"
                args.model_path = str(random_vit_b32(Path(tmp) / "clip"))
            cfg = {"model": args.model, "model_path": args.model_path}
            first = embed_clips(db, store, idents, **cfg)
            assert not first.failed, first.failed
            t0 = time.perf_counter()
            direct = embed_clips(db, store, idents, overwrite=True, **cfg)
            direct_s = time.perf_counter() - t0
            assert len(direct.done) == len(idents), direct.failed

            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("HEATERS_", "DAGSTER_"))
            }
            env.update(prepare_dagster_home(settings), HEATERS_HOME=str(home))
            run_config = {
                "ops": {
                    "clip_embedding": {
                        "config": {**{k: v for k, v in cfg.items() if v}, "overwrite": True}
                    }
                }
            }
            config_file = Path(tmp) / "run_config.json"  # JSON is YAML, which --config reads
            config_file.write_text(json.dumps(run_config))
            os.environ.update(
                DAGSTER_HOME=env["DAGSTER_HOME"],
                HEATERS_DAGSTER_PG_URL=env["HEATERS_DAGSTER_PG_URL"],
            )
            import dagster as dg

            dg.DagsterInstance.get().add_dynamic_partitions(
                names.SOURCE_VIDEOS, [str(v) for v in vids]
            )
            t0 = time.perf_counter()
            runs = 0
            for lo in range(0, len(vids), PER_RUN):
                chunk = [str(v) for v in vids[lo : lo + PER_RUN]]
                proc = subprocess.run(
                    dagster_command(
                        "job",
                        "execute",
                        "-m",
                        names.DEFINITIONS_MODULE,
                        "-j",
                        names.EMBED_CLIPS_JOB,
                        "--tags",
                        json.dumps(names.partition_range_tags(chunk[0], chunk[-1])),
                        "--config",
                        str(config_file),
                    ),
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if proc.returncode != 0:
                    raise SystemExit(f"dagster job execute failed:\n{proc.stderr[-3000:]}")
                runs += 1
            dagster_s = time.perf_counter() - t0
        finally:
            db.dispose()
            stop_server(home)
    n = args.clips
    print(f"re-embedding {n} clips ({args.model}, keyframe_multi_avg, 3 keyframes each)")
    print(f"  direct embed_clips, one process: {direct_s:7.2f} s  ({n / direct_s:6.1f} clips/s)")
    print(
        f"  dagster, {runs} runs of <= {PER_RUN} videos: {dagster_s:7.2f} s  "
        f"({n / dagster_s:6.1f} clips/s, {dagster_s / runs:.1f} s per run)"
    )
    print(
        f"  ratio dagster/direct: {dagster_s / direct_s:.2f}x; runs: {runs} for {n} clips in "
        f"{len(vids)} videos"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
