"""`heaters review` (the browser review app) and `heaters export` (approved-clip manifests).

Registered on the `heaters` Typer app by `heaters_resources.cli.main`. Both sit on
heaters_resources only; the review app reads Dagster run status through the instance that
DAGSTER_HOME names when there is one (read-only, optional).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated

import typer

from heaters_resources.db.engine import get_database
from heaters_resources.settings import Settings
from heaters_resources.store.objects import object_store_from_settings


def review(
    host: Annotated[
        str, typer.Option(help="Bind address (non-loopback needs --token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(help="Access token (required off 127.0.0.1; default HEATERS_REVIEW_TOKEN)."),
    ] = None,
    reviewer: Annotated[str, typer.Option(help="Name recorded in review events.")] = "reviewer",
) -> None:
    """Serve the review web app: one pending clip at a time, actions, undo."""
    import uvicorn

    from heaters_resources.review import ReviewConfig, check_bind, create_app
    from heaters_resources.review.runs import dagster_run_lookup

    settings = Settings.from_env()
    token = token or settings.review_token
    try:
        check_bind(host, token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--host") from exc
    db = get_database(settings)
    db.ensure_migrated()
    secret = (settings.review_secret or "").encode() or secrets.token_bytes(32)
    config = ReviewConfig(token=token, reviewer=reviewer, secret=secret)
    app = create_app(db, object_store_from_settings(settings), config, runs=dagster_run_lookup())
    shown = f"[{host}]" if ":" in host else host
    suffix = f"/?token={token}" if token else "/"
    typer.echo(f"review app on http://{shown}:{port}{suffix}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def export(
    out: Annotated[
        str, typer.Argument(help="Output file (`-`: JSONL on stdout).")
    ] = "approved_clips.jsonl",
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="jsonl or parquet (default: from the file extension)."),
    ] = None,
    embeddings: Annotated[bool, typer.Option(help="Include embedding vectors.")] = False,
    model: Annotated[str | None, typer.Option(help="Only embeddings of this model.")] = None,
    video: Annotated[int | None, typer.Option(help="Only clips of this video.")] = None,
) -> None:
    """Write approved clips as a manifest (ids, source, times, storage keys, embeddings)."""
    from heaters_resources.export import Format, export_manifest

    chosen: Format = "parquet" if Path(out).suffix.lower() == ".parquet" else "jsonl"
    if fmt == "jsonl":
        chosen = "jsonl"
    elif fmt == "parquet":
        chosen = "parquet"
    elif fmt is not None:
        raise typer.BadParameter(f"unknown format {fmt!r}", param_hint="--format")
    try:
        result = export_manifest(
            get_database(),
            out,
            fmt=chosen,
            embeddings=embeddings,
            model_name=model,
            video_id=video,
        )
    except (RuntimeError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    summary = json.dumps({"path": result.path, "format": result.format, "rows": result.rows})
    typer.echo(summary, err=out == "-")
