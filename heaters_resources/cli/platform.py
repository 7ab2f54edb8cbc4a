"""Platform commands of ``heaters``: submit, status, dev, demo.

They sit on heaters_resources and talk to Dagster only through its instance and CLI, never
through heaters_assets internals (ARCHITECTURE.md, "Layers").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from heaters_resources import states
from heaters_resources.cli.options import MAX_ID, AsJson
from heaters_resources.db.engine import Database, get_database
from heaters_resources.db.models import Clip, ClipArtifact, SourceVideo
from heaters_resources.fingerprint import source_fingerprint
from heaters_resources.orchestration import names
from heaters_resources.settings import CLIP_MODES, Settings

if TYPE_CHECKING:
    from heaters_resources.orchestration.instance import WarmDagster

console = Console(stderr=True)
_URL = re.compile(r"^https?://[^/\s]+", re.IGNORECASE)


def normalize_source(source: str) -> str:
    """An http(s) URL as given (if it parses: `http://[::1` would only fail at ingest), or an
    existing local file as an absolute path."""
    if _URL.match(source):
        from heaters_media.errors import InvalidInputError
        from heaters_media.sources import classify_source

        try:
            classify_source(source)
        except InvalidInputError as exc:
            raise typer.BadParameter(exc.message) from None
        return source
    path = Path(source).expanduser()
    try:
        if path.is_file():
            return str(path.resolve())
    except OSError:  # e.g. a name too long for the file system: not a file either
        pass
    raise typer.BadParameter(f"{source[:200]!r} is neither an http(s) URL nor an existing file")


NEW_COPY = typer.Option(
    "--new", help="Register a second copy even if this content was submitted before."
)


def register(db: Database, source: str, *, new: bool, title: str | None = None) -> tuple[int, bool]:
    """(video id, created): the video already holding this content unless ``new``.

    In Ray mode a local file is uploaded to the object store first and registered as
    ``store:<key>``: its run may land on a node that cannot see this machine's disk."""
    normalized = normalize_source(source)
    fingerprint = None if new else source_fingerprint(normalized)
    settings = Settings.from_env()
    if settings.uses_ray and not _URL.match(normalized):
        # The key is derived from the content: the same file submitted twice is one object.
        from heaters_resources.store.uploads import upload_source

        normalized = upload_source(settings, Path(normalized), fingerprint)
    return states.register_source_video(db, normalized, fingerprint=fingerprint, title=title)


def submit(
    sources: Annotated[list[str], typer.Argument(help="URLs or local video files.")],
    title: Annotated[str | None, typer.Option(help="Title (default: from the video).")] = None,
    new: Annotated[bool, NEW_COPY] = False,
) -> None:
    """Queue videos for ingestion; the submissions sensor starts their runs.

    The same content submitted again (same file bytes under any name, same URL) is the video
    already registered: its id is printed and no second copy is made (unless --new)."""
    db = get_database()
    ids, existing = [], []
    for source in sources:
        vid, created = register(db, source, new=new, title=title)
        ids.append(vid)
        if created:
            console.print(f"submitted video [bold]{vid}[/bold]: {source}")
        else:
            existing.append(vid)
            state = states.get_source_video(db, vid).state
            console.print(f"already submitted as video [bold]{vid}[/bold] ({state}): {source}")
    print(json.dumps({"submitted": ids, "existing": existing}))


def status(
    video: Annotated[
        int | None, typer.Option(min=1, max=MAX_ID, help="Show one video's clips.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Videos and clips by state, with the reasons of failures."""
    db = get_database()
    with db.session() as s:
        # Only the columns shown: whole rows would decode every video's `info` JSON.
        videos = s.execute(
            select(
                SourceVideo.id,
                SourceVideo.state,
                SourceVideo.title,
                SourceVideo.source,
                SourceVideo.error,
            ).order_by(SourceVideo.id)
        ).all()
        per_video, shorts = _per_video_counts(s)
        clips = (
            list(
                s.scalars(
                    select(Clip).where(Clip.source_video_id == video).order_by(Clip.start_frame)
                )
            )
            if video
            else []
        )
    clip_counts = _state_totals(per_video)
    if as_json:
        print(
            json.dumps(
                {
                    "videos": [
                        {
                            "id": v.id,
                            "state": v.state,
                            "title": v.title,
                            "source": v.source,
                            "error": v.error,
                            "clips": per_video.get(v.id, {}),
                            "short_clips": shorts.get(v.id, 0),
                        }
                        for v in videos
                    ],
                    "clips_by_state": clip_counts,
                    "short_clips": sum(shorts.values()),
                    "clips": [
                        {
                            "id": c.id,
                            "identifier": c.identifier,
                            "state": c.state,
                            "short": c.short,
                            "error": c.error,
                        }
                        for c in clips
                    ],
                }
            )
        )
        return
    table = Table(title="source videos")
    for col in ("id", "state", "title", "clips", "error"):
        table.add_column(col)
    for v in videos:
        counts = ", ".join(f"{k} {n}" for k, n in sorted(per_video.get(v.id, {}).items()))
        if shorts.get(v.id):
            counts += f" ({shorts[v.id]} short, not in review)"
        state = (
            f"{v.state} ({VIDEO_STATE_WORDS[v.state]})" if v.state in VIDEO_STATE_WORDS else v.state
        )
        table.add_row(str(v.id), state, (v.title or v.source)[:50], counts, (v.error or "")[:60])
    out = Console()  # the answer goes to stdout (notes and progress go to stderr)
    out.print(table)
    out.print(
        "clips by state: "
        + (", ".join(f"{k} {n}" for k, n in sorted(clip_counts.items())) or "none")
        + (f"; {sum(shorts.values())} short clip(s) kept out of review" if shorts else "")
    )
    if clips:
        ct = Table(title=f"clips of video {video}")
        for col in ("id", "identifier", "state", "start", "end", "error"):
            ct.add_column(col)
        for c in clips:
            ct.add_row(
                str(c.id),
                c.identifier,
                c.state + (" (short)" if c.short else ""),
                f"{c.start_time:.2f}",
                f"{c.end_time:.2f}",
                (c.error or "")[:60],
            )
        out.print(ct)


def _per_video_counts(session: Session) -> tuple[dict[int, dict[str, int]], dict[int, int]]:
    """Clips per video and state, and live short clips per video, in one pass over `clips`.

    Counting needs every row whatever the plan: there is no index on `state` (migration 0002:
    state transitions stay HOT updates), so this is a sequential scan with a hash aggregate,
    about 0.3 s a million clips. The totals by state are summed from these groups in
    `_state_totals` instead of a second scan.
    """
    out: dict[int, dict[str, int]] = {}
    shorts: dict[int, int] = {}
    for vid, state, n, short in session.execute(
        select(
            Clip.source_video_id,
            Clip.state,
            func.count(),
            func.count().filter(Clip.short, Clip.superseded_at.is_(None)),
        ).group_by(Clip.source_video_id, Clip.state)
    ):
        out.setdefault(vid, {})[state] = n
        if short:  # live clips of short shots, kept out of the review queue
            shorts[vid] = shorts.get(vid, 0) + short
    return out, shorts


def _state_totals(per_video: dict[int, dict[str, int]]) -> dict[str, int]:
    """Clips by state over all videos (every clip belongs to a video), in state order."""
    totals: dict[str, int] = {}
    for counts in per_video.values():
        for state, n in counts.items():
            totals[state] = totals.get(state, 0) + n
    return dict(sorted(totals.items()))


def dev(
    port: Annotated[int, typer.Option(help="Dagster UI port.")] = 3000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
) -> None:
    """Start the database (embedded unless HEATERS_DATABASE_URL) and `dagster dev`
    (webserver + daemon: sensors on, UI at http://HOST:PORT)."""
    from heaters_resources.orchestration.instance import (
        dagster_command,
        prepare_dagster_home,
    )

    get_database().ensure_migrated()
    env = prepare_dagster_home()
    console.print(f"DAGSTER_HOME={env['DAGSTER_HOME']}; UI on http://{host}:{port}")
    cmd = dagster_command("dev", "-m", names.DEFINITIONS_MODULE, "-h", host, "-p", str(port))
    raise typer.Exit(subprocess.call(cmd, env=env))


def demo(
    source: Annotated[
        str | None,
        typer.Argument(help="URL or path (default: the bundled Big Buck Bunny sample edit)."),
    ] = None,
    new: Annotated[bool, NEW_COPY] = False,
    clips: Annotated[
        str | None,
        typer.Option(
            "--clips",
            help="proxy: review proxies, each clip's file cut when approved (about 2x faster); "
            "exact: cut every clip's file now. Default: HEATERS_CLIPS, else proxy.",
        ),
    ] = None,
) -> None:
    """The main job on the embedded defaults: one video through the whole Dagster graph
    (ingest, scenes, clips, keyframes, sprites, review proxies) in one run of `video_job` via
    the Dagster CLI, then a summary table. Clip files are cut when approved (--clips exact:
    all of them now).

    Run again on the same content, it resumes that video where it stopped (after a crash,
    kill or failure) instead of making a second copy; --new makes one."""
    from heaters_resources.orchestration.instance import (
        WarmDagster,
        dagster_home_dir,
        storage_modules,
    )

    settings = Settings.from_env()
    if clips is not None:
        if clips.lower() not in CLIP_MODES:
            raise typer.BadParameter(f"one of {', '.join(CLIP_MODES)}", param_hint="--clips")
        settings = settings.with_overrides(clips=clips.lower())
    # The Dagster CLI process starts now and imports while Postgres starts and the video is
    # registered: 2 of its 2.5 s of fixed cost overlap our set-up instead of following it.
    log = dagster_home_dir(settings) / "demo.log"
    with WarmDagster(names.DEFINITIONS_MODULE, log, storage_modules()) as dagster_cli:
        _demo(dagster_cli, settings, source, new)


def _demo(dagster_cli: WarmDagster, settings: Settings, source: str | None, new: bool) -> None:
    import dagster as dg

    from heaters_media.samples import SAMPLE_VIDEO
    from heaters_resources.orchestration.instance import prepare_dagster_home

    db = get_database(settings)
    db.ensure_migrated()
    env = prepare_dagster_home(settings)
    env["HEATERS_CLIPS"] = settings.clips  # the run's splice reads it
    log = dagster_cli.log_file
    vid, created = register(db, source or str(SAMPLE_VIDEO), new=new)
    if not created:
        state = states.get_source_video(db, vid).state
        console.print(f"video [bold]{vid}[/bold] holds this content ({state}): resuming it")
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "HEATERS_DAGSTER_PG_URL")})
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(names.SOURCE_VIDEOS, [str(vid)])
    console.print(f"Dagster log: {log}")
    t0 = time.perf_counter()
    # One run for the whole video: every step in one process (the in-process executor), so
    # the demo pays for one Dagster start-up, not one per job.
    what = f"video {vid}: ingest, scenes, clips, keyframes + sprites" + (
        " + review proxies (clip files cut when approved)" if settings.clips == "proxy" else ""
    )
    tags = json.dumps({"dagster/partition": str(vid)})
    args = ["job", "execute", "-m", names.DEFINITIONS_MODULE, "-j", names.VIDEO_JOB]
    with_progress(
        what,
        partial(dagster_cli.run, [*args, "--tags", tags], env),
        partial(_video_and_clips, db, vid),
    )
    run_id = _latest_run_id(instance, names.VIDEO_JOB, str(vid))
    console.print(f"[green]done[/green] {what} in {time.perf_counter() - t0:.1f} s (run {run_id})")
    run_ids = [run_id]
    with db.session() as s:
        keys = list(s.scalars(select(Clip.identifier).where(Clip.source_video_id == vid)))
    seconds = time.perf_counter() - t0
    _summary(vid, seconds, settings)
    console.print(
        f"the runs in the Dagster UI: [bold]heaters dev[/bold], then "
        f"http://127.0.0.1:3000/runs/{run_ids[-1]}; review: [bold]heaters review[/bold]"
    )
    print(
        json.dumps(
            {"video_id": vid, "clips": len(keys), "seconds": round(seconds, 1), "runs": run_ids}
        )
    )


#: A video's state in words, for people new to the names (`heaters status`, the demo's bar).
VIDEO_STATE_WORDS = {
    "new": "waiting for its ingest run",
    "downloading": "fetching / normalizing",
    "downloaded": "stored and probed",
    "splicing": "detecting shots, cutting clips",
    "spliced": "cut into clips",
    "ingestion_failed": "fetch or probe failed",
    "splicing_failed": "shot detection or cutting failed",
}
#: How far an ingest run is, by the video's state (of 3 steps).
_INGEST_STEPS = {"new": 0, "downloading": 0, "downloaded": 1, "splicing": 2, "spliced": 3}


def _video_stage(db: Database, vid: int) -> tuple[int, int, str]:
    """(done, total, note) of an ingest run, read from the video's row."""
    state = states.get_source_video(db, vid).state
    return _INGEST_STEPS.get(state, 3), 3, VIDEO_STATE_WORDS.get(state, state)


def _video_and_clips(db: Database, vid: int) -> tuple[int, int, str]:
    """(done, total, note) of a whole-video run: the ingest's 3 steps, then one per clip."""
    done, total, note = _video_stage(db, vid)
    if done < total:
        return done, total + 1, note  # the clips are not known yet: one step stands for them
    ready, clips, note = _clips_ready(db, vid)
    if ready < clips and "failed" not in note:
        note = "keyframes + sprites"
    return total + ready, total + clips, note


def _clips_ready(db: Database, vid: int) -> tuple[int, int, str]:
    """(clips done, clips, note) of an artifacts run: clips past their sprite count as done."""
    with db.session() as s:
        rows = dict(
            s.execute(
                select(Clip.state, func.count())
                .where(Clip.source_video_id == vid, Clip.superseded_at.is_(None))
                .group_by(Clip.state)
            ).all()
        )
    busy = ("spliced", "keyframing", "keyframed", "generating_sprite")
    total = sum(rows.values())
    failed = sum(n for st, n in rows.items() if st.endswith("_failed"))
    done = total - sum(rows.get(st, 0) for st in busy)
    return done, total, f"{failed} failed" if failed else "clips ready for review"


def with_progress(
    what: str, work: Callable[[], Any], count: Callable[[], tuple[int, int, str]]
) -> None:
    """Run ``work`` (a blocking Dagster CLI call) while a progress bar shows what ``count``
    reads from the database every half second: done of total, the elapsed time, and a note.
    A database hiccup while polling leaves the bar where it was; ``work``'s error is raised."""
    from concurrent.futures import ThreadPoolExecutor, wait

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[note]}"),
    )
    with Progress(*columns, console=console) as bar, ThreadPoolExecutor(1) as pool:
        task = bar.add_task(what, total=None, note="")
        running = pool.submit(work)
        while True:
            finished = running.done()
            try:
                done, total, note = count()
                bar.update(task, completed=done, total=total or None, note=note)
            except Exception:
                pass
            if finished:
                break
            # Woken as soon as the work ends, not at the next tick (a sleep cost 0.25 s a run).
            wait([running], timeout=0.5)
        running.result()


def _latest_run_id(instance: Any, job: str, partition: str) -> str | None:
    """The newest run of ``job`` for ``partition`` (the one `dagster job execute` just made)."""
    import dagster as dg

    runs = instance.get_runs(
        dg.RunsFilter(job_name=job, tags={"dagster/partition": partition}), limit=1
    )
    return runs[0].run_id if runs else None


def _summary(vid: int, seconds: float, settings: Settings) -> None:
    db = get_database(settings)
    with db.session() as s:
        video = s.get(SourceVideo, vid)
        assert video is not None
        clips = list(
            s.scalars(select(Clip).where(Clip.source_video_id == vid).order_by(Clip.start_frame))
        )
        arts = dict(
            s.execute(
                select(ClipArtifact.clip_id, func.count())
                .where(ClipArtifact.clip_id.in_([c.id for c in clips]))
                .group_by(ClipArtifact.clip_id)
            ).all()
        )
    table = Table(
        title=f"video {vid} ({video.title}): {video.frame_count} frames, "
        f"{video.duration_s:.1f} s -> {len(clips)} clips in {seconds:.1f} s"
    )
    for col in ("clip", "frames", "start s", "end s", "state", "artifacts", "file"):
        table.add_column(col)
    for c in clips:
        table.add_row(
            c.identifier,
            str(c.end_frame - c.start_frame),
            f"{c.start_time:.2f}",
            f"{c.end_time:.2f}",
            c.state,
            str(arts.get(c.id, 0)),
            "cut" if c.storage_key else "when approved",
        )
    console.print(table)
    where = settings.s3_bucket or settings.objects_dir
    console.print(f"objects in {where}; `heaters status`, `heaters dev` for the Dagster UI")
