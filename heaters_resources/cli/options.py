"""Option types shared by the `heaters` commands.

Ids are Postgres `bigint`s: a larger number given on the command line would reach the
database and come back as a driver error (a traceback), so Click refuses it as a usage error
instead, like any other malformed argument.
"""

from __future__ import annotations

from typing import Annotated

import typer

#: The largest id a Postgres `bigint` column holds.
MAX_ID = 2**63 - 1

VideoId = Annotated[
    int | None,
    typer.Option(min=1, max=MAX_ID, help="Only clips of this video (its id)."),
]

#: Read commands print a table for people, or with --json one JSON document for scripts: never
#: both (a table on stderr next to JSON on stdout interleaved badly in terminals).
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of the table.")
]
