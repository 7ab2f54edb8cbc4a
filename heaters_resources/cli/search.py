"""Search commands of ``heaters``: similar, search, near-duplicates, embed-missing, reindex.

Each prints a Rich table on stdout, or with ``--json`` one JSON document instead (pipe it to
jq); notes go to stderr. Errors exit 2 with one ``heaters: error (kind): ...`` line on stderr, or
with ``--json`` a JSON error object on stdout. They call the same functions as the review page
(:mod:`heaters_resources.search.similarity`, :mod:`heaters_resources.steps.embeddings`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from heaters_media.errors import MediaError
from heaters_resources.cli.options import MAX_ID, AsJson
from heaters_resources.db.engine import get_database
from heaters_resources.errors import HeatersStateError
from heaters_resources.orchestration import names
from heaters_resources.orchestration.ranges import VIDEOS_PER_EMBEDDING_RUN, partition_ranges
from heaters_resources.search import duplicates, similarity, space
from heaters_resources.settings import Settings
from heaters_resources.steps import embeddings

console = Console(stderr=True)
stdout_console = Console()

Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model name the vectors are stored under (default: "
        "HEATERS_EMBEDDING_MODEL or heaters/pixels-v1).",
    ),
]
Strategy = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        "-s",
        help="keyframe_multi_avg or keyframe_midpoint (default: "
        "HEATERS_EMBEDDING_STRATEGY or keyframe_multi_avg).",
    ),
]
K = Annotated[int, typer.Option("-k", "--top", min=1, max=1000, help="How many clips.")]


@contextmanager
def _errors(as_json: bool) -> Iterator[None]:
    """Known failures, exit code 2: a JSON error object on stdout with --json, else one
    ``heaters: error (kind): ...`` line on stderr (never a traceback)."""
    try:
        yield
    except (MediaError, HeatersStateError, ValueError) as exc:
        kind = getattr(exc, "kind", type(exc).__name__)
        if as_json:
            print(json.dumps({"status": "error", "error": {"type": kind, "message": str(exc)}}))
        else:
            message = " ".join(str(exc).split())
            typer.echo(f"heaters: error ({kind}): {message}", err=True)
        raise typer.Exit(2) from None


def _emit(as_json: bool, document: dict[str, Any], *tables: Any) -> None:
    """The command's answer: the JSON document, or the tables (Rich renderables) for people."""
    if as_json:
        print(json.dumps(document))
        return
    for table in tables:
        stdout_console.print(table)


def _clip_table(title: str, rows: Sequence[similarity.SimilarClip]) -> Table:
    table = Table(title=title)
    for col in ("#", "clip id", "identifier", "video", "state", "distance", "similarity"):
        table.add_column(col)
    for n, r in enumerate(rows, 1):
        table.add_row(
            str(n),
            str(r.clip_id),
            r.identifier,
            str(r.source_video_id),
            r.state,
            f"{r.distance:.4f}",
            f"{r.similarity:.4f}",
        )
    return table


def _space(model: str | None, strategy: str | None) -> tuple[str, str]:
    return model or space.default_model(), strategy or space.default_strategy()


def similar(
    clip: Annotated[str, typer.Argument(help="Clip id or identifier.")],
    k: K = 10,
    model: Model = None,
    strategy: Strategy = None,
    exclude_same_video: Annotated[
        bool, typer.Option(help="Leave out clips of the clip's own source video.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """The clips nearest to CLIP (cosine distance, pgvector HNSW), never CLIP itself."""
    model, strategy = _space(model, strategy)
    with _errors(as_json):
        rows = similarity.similar_clips(
            get_database(), clip, k, model, strategy, exclude_same_video
        )
    _emit(
        as_json,
        {
            "clip": clip,
            "model": model,
            "strategy": strategy,
            "results": [r.to_dict() for r in rows],
        },
        _clip_table(f"clips similar to {clip} ({model}, {strategy})", rows),
    )


def search(
    query: Annotated[str, typer.Argument(help="What to look for, in words.")],
    k: K = 10,
    model: Model = None,
    strategy: Strategy = None,
    model_path: Annotated[
        str | None,
        typer.Option(
            help="Folder with the CLIP weights (save_pretrained), if not in the HF cache."
        ),
    ] = None,
    offline: Annotated[bool, typer.Option(help="Never download weights.")] = False,
    as_json: AsJson = False,
) -> None:
    """Text -> clip search with a CLIP model (its text and image vectors share one space)."""
    model, strategy = _space(model, strategy)
    with _errors(as_json):
        rows = similarity.search_text(
            get_database(), query, k, model, strategy, model_path=model_path, offline=offline
        )
    _emit(
        as_json,
        {
            "query": query,
            "model": model,
            "strategy": strategy,
            "results": [r.to_dict() for r in rows],
        },
        _clip_table(f"clips matching {query!r} ({model})", rows),
    )


def near_duplicates(
    threshold: Annotated[
        float,
        typer.Option(
            min=0.0, max=2.0, help="Cosine distance below which two clips are duplicates."
        ),
    ] = 0.05,
    model: Model = None,
    strategy: Strategy = None,
    per_clip: Annotated[int, typer.Option(min=1, help="Neighbours looked at per clip.")] = 10,
    limit: Annotated[int, typer.Option(min=0, help="At most this many pairs.")] = 1000,
    engine: Annotated[
        str,
        typer.Option(help="auto (faiss when installed, else exact), faiss, or exact (NumPy)."),
    ] = "auto",
    index: Annotated[
        str,
        typer.Option(
            help="faiss only: auto (exact for small searches, a tuned inverted file above), "
            "flat (exact) or ivf."
        ),
    ] = "auto",
    since_clip_id: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=MAX_ID,
            help="Only clips with a higher id (new clips) are searched, against every clip: "
            "the pairs involving at least one of them.",
        ),
    ] = None,
    check_recall: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Also search N sampled clips exactly and report the graph's recall@per-clip.",
        ),
    ] = 0,
    as_json: AsJson = False,
) -> None:
    """Pairs of clips whose embeddings are closer than THRESHOLD, closest first: one pass over
    the space's vectors (a k-nearest-neighbour graph built in batch)."""
    model, strategy = _space(model, strategy)
    with _errors(as_json):
        db = get_database()
        space.require_stored_space(db, model, strategy)
        found = duplicates.find_near_duplicates(
            db,
            threshold,
            model,
            strategy,
            per_clip=per_clip,
            limit=limit,
            engine=engine,
            index=index,
            since_clip_id=since_clip_id,
            check_recall=check_recall,
        )
    pairs = found.pairs
    table = Table(title=f"{len(pairs)} near-duplicate pairs (distance < {threshold}, {model})")
    for col in ("a", "b", "same video", "distance"):
        table.add_column(col)
    for p in pairs:
        table.add_row(
            p.a.identifier,
            p.b.identifier,
            "yes" if p.a.source_video_id == p.b.source_video_id else "",
            f"{p.distance:.4f}",
        )
    summary = found.summary()
    recall = "" if found.recall is None else f", recall@{per_clip} {found.recall:.3f}"
    note = (
        f"{found.engine}: {found.queried} of {found.clips} clips searched in "
        f"{summary['seconds'].get('total', 0.0)} s{recall}"
    )
    document = {
        "model": model,
        "strategy": strategy,
        "threshold": threshold,
        "pairs": [p.to_dict() for p in pairs],
        **summary,
    }
    _emit(as_json, document, table, note)


def embed_missing(
    model: Model = None,
    strategy: Strategy = None,
    model_path: Annotated[str | None, typer.Option(help="Local weights folder.")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Only list the missing clips and the runs that would be launched.")
    ] = False,
    local: Annotated[
        bool, typer.Option(help="Embed here, without Dagster (small libraries, no daemon).")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    as_json: AsJson = False,
) -> None:
    """Embed only the clips (approved/embedded) that lack MODEL/STRATEGY vectors: one
    `dagster job execute` of embed_clips_job per range of at most 50 videos, or --local."""
    model, strategy = _space(model, strategy)
    settings = Settings.from_env()
    with _errors(as_json):
        space.check_strategy(strategy)  # an unknown one would list "nothing missing"
        db = get_database(settings)
        missing = embeddings.clips_missing_embedding(db, model, strategy)
        idents = [i for _, i in missing]
        videos = [str(v) for v in embeddings.videos_missing_embedding(db, model, strategy)]
        console.print(f"{len(idents)} clips of {len(videos)} videos miss {model}/{strategy}")
        report: dict[str, Any] = {"model": model, "strategy": strategy, "missing": idents}
        if dry_run or not idents:
            report["runs"] = [
                list(r) for r in partition_ranges(videos, videos, VIDEOS_PER_EMBEDDING_RUN)
            ]
        elif local:
            from heaters_resources.store.objects import object_store_from_settings

            out = embeddings.embed_missing(
                db,
                object_store_from_settings(settings),
                model=model,
                strategy=strategy,
                model_path=model_path,
                batch_size=batch_size,
            )
            report.update(
                done=out.done, failed=out.failed, skipped=out.skipped, seconds=round(out.seconds, 2)
            )
        else:
            report["runs"] = _launch(settings, videos, model, strategy, model_path, batch_size)
    _emit(as_json, report, *_missing_tables(report))
    if report.get("failed"):
        raise typer.Exit(1)


def _missing_tables(report: dict[str, Any]) -> list[Any]:
    """embed-missing's answer for people: the runs (launched or planned) or what --local did."""
    shown: list[Any] = []
    if "runs" in report:
        table = Table(title=f"embedding runs over video partitions ({report['model']})")
        table.add_column("first video")
        table.add_column("last video")
        for first, last in report["runs"]:
            table.add_row(first, last)
        shown.append(table)
    if "done" in report:
        shown.append(
            f"embedded {len(report['done'])} clips in {report['seconds']} s; "
            f"{len(report['failed'])} failed, {len(report['skipped'])} skipped"
        )
        for ident, reason in report["failed"].items():
            shown.append(f"failed {ident}: {reason}")
    return shown


def reindex(
    model: Annotated[str, typer.Argument(help="The model whose HNSW index to rebuild.")],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="halfvec (2-byte floats: half the size, same recall) or vector "
            "(default: HEATERS_VECTOR_INDEX, halfvec).",
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Rebuild MODEL's similarity index as KIND, e.g. to halve an old library's index (writes
    of embeddings wait while it builds: 30-40 s per 100,000 512-d vectors on 2 cores)."""
    from heaters_resources.search.index import index_kind, rebuild_hnsw_index

    with _errors(as_json):
        chosen = kind or Settings.from_env().vector_index
        db = get_database()
        found = space.known_dimensions(db, model)
        if "stored" not in found and "index" not in found:
            raise ValueError(f"no vectors or index for model {model!r}: nothing to rebuild")
        dimension = found.get("stored") or found["index"]
        before = index_kind(db, model)
        t0 = time.perf_counter()
        name = rebuild_hnsw_index(db, model, chosen, dimension)
        with db.engine.connect() as conn:
            size = conn.execute(text(f"SELECT pg_relation_size('{name}')")).scalar()
    report = {
        "model": model,
        "index": name,
        "kind": chosen,
        "was": before,
        "dimension": dimension,
        "seconds": round(time.perf_counter() - t0, 2),
        "index_mb": round((size or 0) / 2**20, 1),
    }
    _emit(
        as_json,
        report,
        f"{model}: {before} -> {chosen} index {name} ({dimension}-d), "
        f"{report['index_mb']} MiB, built in {report['seconds']} s",
    )


def _launch(
    settings: Settings,
    videos: list[str],
    model: str,
    strategy: str,
    model_path: str | None,
    batch_size: int,
) -> list[list[str]]:
    """One `dagster job execute` per range of video partitions (the instance records the runs)."""
    import dagster as dg

    from heaters_resources.orchestration.instance import (
        prepare_dagster_home,
        run_dagster,
    )

    env = prepare_dagster_home(settings)
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "HEATERS_DAGSTER_PG_URL")})
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(names.SOURCE_VIDEOS))
    new = [v for v in videos if v not in known]
    if new:
        instance.add_dynamic_partitions(names.SOURCE_VIDEOS, new)
    order = list(instance.get_dynamic_partitions(names.SOURCE_VIDEOS))
    ranges = partition_ranges(videos, order, VIDEOS_PER_EMBEDDING_RUN)
    config = {
        "model": model,
        "strategy": strategy,
        "batch_size": batch_size,
        **({"model_path": model_path} if model_path else {}),
    }
    log = Path(env["DAGSTER_HOME"]) / "embed-missing.log"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump({"ops": {"clip_embedding": {"config": config}}}, f)  # JSON is YAML
    try:
        for n, (first, last) in enumerate(ranges, 1):
            t0 = time.perf_counter()
            with console.status(f"run {n}/{len(ranges)}: {first} .. {last}"):
                run_dagster(
                    [
                        "job",
                        "execute",
                        "-m",
                        names.DEFINITIONS_MODULE,
                        "-j",
                        names.EMBED_CLIPS_JOB,
                        "-c",
                        f.name,
                        "--tags",
                        json.dumps(names.partition_range_tags(first, last)),
                    ],
                    env,
                    log,
                )
            console.print(f"run {n}/{len(ranges)} done in {time.perf_counter() - t0:.1f} s")
    finally:
        Path(f.name).unlink(missing_ok=True)
    return [list(r) for r in ranges]


COMMANDS: dict[str, Callable[..., None]] = {
    "similar": similar,
    "search": search,
    "near-duplicates": near_duplicates,
    "embed-missing": embed_missing,
    "reindex": reindex,
}
