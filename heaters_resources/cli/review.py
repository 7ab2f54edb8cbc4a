"""`heaters review` (the browser review app) and `heaters export` (approved-clip manifests).

Registered on the `heaters` Typer app by `heaters_resources.cli.main`. Both sit on
heaters_resources only; the review app reads Dagster run status through the instance that
DAGSTER_HOME names when there is one (read-only, optional).
"""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from heaters_resources.cli.options import MAX_ID, VideoId
from heaters_resources.db.engine import get_database
from heaters_resources.settings import Settings
from heaters_resources.store.objects import object_store_from_settings


def review(
    host: Annotated[
        str, typer.Option(help="Bind address (off loopback a token is required or generated).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            help="Access token (>= 16 characters). Visible to other users in `ps`: prefer "
            "HEATERS_REVIEW_TOKEN or --token-file."
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Read the access token from this file (first line)."),
    ] = None,
    reviewer: Annotated[str, typer.Option(help="Name recorded in review events.")] = "reviewer",
) -> None:
    """Serve the review web app: one pending clip at a time, actions, undo.

    The access token comes from --token-file, --token or HEATERS_REVIEW_TOKEN; bound off
    loopback without one, a random token is generated and printed once (in the URL)."""
    import uvicorn

    from heaters_resources.review import ReviewConfig, create_app
    from heaters_resources.review.runs import dagster_run_lookup

    settings = Settings.from_env()
    if token is not None:
        typer.echo(
            "heaters: warning: --token is visible to other users in `ps`; "
            "prefer HEATERS_REVIEW_TOKEN or --token-file",
            err=True,
        )
    try:
        chosen = review_token(host, token, token_file, settings.review_token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--token") from exc
    secret = (settings.review_secret or "").encode() or secrets.token_bytes(32)
    try:
        config = ReviewConfig(token=chosen, reviewer=reviewer, secret=secret)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--reviewer") from exc
    db = get_database(settings)
    db.ensure_migrated()
    app = create_app(db, object_store_from_settings(settings), config, runs=dagster_run_lookup())
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    suffix = f"/?token={quote(chosen, safe='')}" if chosen else "/"
    typer.echo(f"review app on http://{shown}:{sock.getsockname()[1]}{suffix}", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])


def review_token(
    host: str, given: str | None, token_file: Path | None, from_env: str | None
) -> str | None:
    """The access token to require: --token-file, else --token, else the environment; None on
    loopback without one, a new random one off loopback (so the app is never open to the
    network). Raises ValueError for two sources at once, an unreadable file or a short token.
    """
    from heaters_resources.review.security import check_bind, check_token, is_loopback

    if given is not None and token_file is not None:
        raise ValueError("give the token once: --token or --token-file, not both")
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read --token-file {token_file}: {exc}") from exc
        given = lines[0].strip() if lines else ""
    token = given if given is not None else from_env
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    if token is not None:
        check_token(token)
    check_bind(host, token)
    return token


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so the printed URL has the real port (also for 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc}") from exc
    return sock


def export(
    out: Annotated[
        str,
        typer.Argument(
            help="Output file: .jsonl / .ndjson (JSON lines) or .parquet; other extensions are "
            "refused unless --format is given. `-`: JSONL on stdout."
        ),
    ] = "approved_clips.jsonl",
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="jsonl or parquet (default: from the file extension)."),
    ] = None,
    embeddings: Annotated[bool, typer.Option(help="Include embedding vectors.")] = False,
    model: Annotated[str | None, typer.Option(help="Only embeddings of this model.")] = None,
    video: VideoId = None,
    clip: Annotated[
        list[int] | None,
        typer.Option(
            "--clip",
            min=1,
            max=MAX_ID,
            help="Only this clip (repeat it: a selection, as the library page's export).",
        ),
    ] = None,
) -> None:
    """Write approved clips as a manifest (ids, source, times, storage keys, embeddings)."""
    from heaters_media.errors import MediaError
    from heaters_resources.export import check_target, export_manifest, manifest_format

    try:
        chosen = manifest_format(out, fmt)  # both refused before the database is started
        check_target(out)
        result = export_manifest(
            get_database(),
            out,
            fmt=chosen,
            embeddings=embeddings,
            model_name=model,
            video_id=video,
            clip_ids=clip or None,
        )
    except (RuntimeError, ValueError, MediaError) as exc:
        typer.echo(f"heaters: {exc}", err=True)
        raise typer.Exit(2) from exc
    summary = json.dumps({"path": result.path, "format": result.format, "rows": result.rows})
    typer.echo(summary, err=out == "-")
