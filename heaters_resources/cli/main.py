"""The `heaters` command line (console script `heaters = heaters_resources.cli.main:run`).

A plain Typer app: other layers add their commands to `app`. The commands here manage the
database: `migrate`, `db-url`, `db-status`.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy import func, select

from heaters_resources.db.engine import (
    current_revision,
    database_url,
    get_database,
    head_revision,
    migrate,
)
from heaters_resources.settings import Settings

app = typer.Typer(
    name="heaters",
    no_args_is_help=True,
    add_completion=False,
    # Markdown: docstring paragraphs re-flow to the terminal's width instead of keeping the
    # source's line breaks.
    rich_markup_mode="markdown",
    help="Heaters: turn long videos into a reviewed library of clips.",
)


def _hide_flag_types() -> None:
    """Typer's help prints ``<bool>`` beside every flag: noise (a flag takes no value). Its
    types column is kept for options that take one (``<float range>``, ``<text>``)."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None:  # another Typer: leave its help alone
        return

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"heaters {version('heaters')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Heaters: turn long videos into a reviewed library of clips."""


@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the schema (starts the embedded database if needed)."""
    db = get_database()
    revision = migrate(db.engine)
    typer.echo(f"database at revision {revision}")


@app.command("db-url")
def db_url_cmd() -> None:
    """Print the SQLAlchemy URL every process uses (starts the embedded database if needed)."""
    typer.echo(database_url())


@app.command("db-status")
def db_status_cmd() -> None:
    """Print the URL, schema revision and row counts per state as JSON."""
    from heaters_resources.db.models import Clip, SourceVideo

    settings = Settings.from_env()
    db = get_database(settings)
    status: dict[str, object] = {
        "url": db.url,
        "embedded": settings.database_url is None,
        "revision": current_revision(db.engine),
        "head": head_revision(),
    }
    if status["revision"] == status["head"]:
        with db.session() as session:
            for name, model in (("source_videos", SourceVideo), ("clips", Clip)):
                rows = session.execute(select(model.state, func.count()).group_by(model.state))
                status[name] = {state: count for state, count in rows}
    typer.echo(json.dumps(status, indent=2))


@app.command("cleanup")
def cleanup_cmd(
    min_age_hours: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=876_000.0,  # 100 years: a larger (or infinite) age overflows a timedelta
            help="Leave objects younger than this (uploads in flight).",
        ),
    ] = 1.0,
    dry_run: Annotated[
        bool, typer.Option(help="List what would be deleted, delete nothing.")
    ] = False,
) -> None:
    """Delete stored objects no row references (left by crashed steps) and the objects
    that overwrites scheduled for deletion; prints what was (or would be) deleted as JSON."""
    from heaters_resources.store.cleanup import (
        find_orphan_objects,
        purge_scheduled_deletions,
        remove_orphan_objects,
    )
    from heaters_resources.store.objects import object_store_from_settings

    settings = Settings.from_env()
    db, store = get_database(settings), object_store_from_settings(settings)
    age = timedelta(hours=min_age_hours)
    if dry_run:
        report: dict[str, object] = {"orphans": find_orphan_objects(db, store, min_age=age)}
    else:
        scheduled = purge_scheduled_deletions(db, store)
        orphans = remove_orphan_objects(db, store, min_age=age)
        report = {
            "orphans_deleted": orphans.deleted,
            "orphans_failed": orphans.failed,
            "scheduled_deleted": scheduled.deleted,
            "scheduled_failed": scheduled.failed,
        }
    typer.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    app()


def _register_platform_commands() -> None:
    from heaters_resources.cli import doctor as cli_doctor
    from heaters_resources.cli import platform as cli_platform

    app.command("submit")(cli_platform.submit)
    app.command("status")(cli_platform.status)
    app.command("dev")(cli_platform.dev)
    app.command("demo")(cli_platform.demo)
    app.command("doctor")(cli_doctor.doctor)


_register_platform_commands()


def _register_search_commands() -> None:
    from heaters_resources.cli import search as cli_search

    for name, command in cli_search.COMMANDS.items():
        app.command(name)(command)


_register_search_commands()


def _register_review_commands() -> None:
    from heaters_resources.cli import review as cli_review

    app.command("review")(cli_review.review)
    app.command("export")(cli_review.export)


_register_review_commands()


def run() -> None:
    """The console script: the app, with expected errors (a database made by another
    PostgreSQL, an unknown clip, a bad video) and usage mistakes (a bad option value, a
    missing argument) as one line on stderr and exit status 2 instead of a traceback or
    Click's text box. Anything else is a bug and keeps its traceback. Help (``--help``, or no
    arguments) is printed as usual."""
    import sys

    from heaters_media.errors import MediaError
    from heaters_resources.errors import HeatersStateError

    if len(sys.argv) <= 1:
        app()
        return
    try:
        code = app(standalone_mode=False)
    except (HeatersStateError, MediaError) as exc:
        typer.echo(f"heaters: {exc}", err=True)
        raise SystemExit(2) from None
    except typer.Abort:
        raise SystemExit(130) from None
    except Exception as exc:
        # Click's errors (Typer vendors Click, so matched by their shape: an exit code and a
        # formatted message); anything else is a bug and keeps its traceback.
        exit_code = getattr(exc, "exit_code", None)
        if not isinstance(exit_code, int) or not hasattr(exc, "format_message"):
            raise
        message = " ".join(str(exc.format_message()).split())
        typer.echo(f"heaters: {message}", err=True)
        raise SystemExit(exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)
