"""`heaters doctor`: check the library for what crashes leave behind, and `--repair` it
(heaters_resources.doctor says what each finding means)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from heaters_resources.cli.options import AsJson
from heaters_resources.db.engine import get_database
from heaters_resources.settings import Settings

if TYPE_CHECKING:
    from heaters_resources.doctor import DoctorReport


def doctor(
    repair: Annotated[
        bool,
        typer.Option(
            help="Delete orphan objects, send rows of dead workers back to a retryable state, "
            "remove scratch folders of killed steps. Without it nothing is changed."
        ),
    ] = False,
    min_age_hours: Annotated[
        float,
        typer.Option(
            min=0.0, max=876_000.0, help="Orphans younger than this are uploads in flight."
        ),
    ] = 1.0,
    as_json: AsJson = False,
) -> None:
    """Orphan objects, dangling keys, rows stuck in an in-progress state, stale scratch
    folders: a summary and what was found (or with --json the full report as JSON on stdout).
    Exit status 1 when something is wrong (after --repair: when something could not be
    fixed)."""
    from heaters_resources.doctor import examine
    from heaters_resources.store.objects import object_store_from_settings

    settings = Settings.from_env()
    db, store = get_database(settings), object_store_from_settings(settings)
    report = examine(db, store, repair=repair, min_age=timedelta(hours=min_age_hours))
    if as_json:
        print(json.dumps({**asdict(report), "healthy": report.healthy}, indent=2))
    else:
        _print_report(report, repair)
    if report.dangling_keys if repair else not report.healthy:
        raise typer.Exit(1)  # something is (still) wrong: scripts can tell


#: Items of each kind listed in the table (the JSON report has them all).
LISTED = 20


def _print_report(report: DoctorReport, repair: bool) -> None:
    """The summary line and up to LISTED items of each finding, for people."""
    out = Console()
    verb = "fixed" if repair else "found"
    out.print(
        f"doctor {verb}: {len(report.orphan_objects)} orphan object(s), "
        f"{len(report.stuck_rows)} stuck row(s), {len(report.stale_scratch)} stale scratch "
        f"folder(s); {len(report.dangling_keys)} dangling key(s)"
        + (
            f" (re-materialize videos {report.videos_to_redo} with overwrite)"
            if report.dangling_keys
            else ""
        )
    )
    table = Table(show_header=True)
    table.add_column("finding")
    table.add_column("item")
    for name in ("orphan_objects", "dangling_keys", "stuck_rows", "stale_scratch"):
        items = list(getattr(report, name))
        for item in items[:LISTED]:
            table.add_row(name.replace("_", " "), str(item))
        if len(items) > LISTED:
            table.add_row(name.replace("_", " "), f"... {len(items) - LISTED} more (--json)")
    if table.row_count:
        out.print(table)
    out.print("healthy" if report.healthy else "not healthy")
