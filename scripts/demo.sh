#!/usr/bin/env bash
# The main job on the embedded defaults: install what is missing, start the embedded Postgres
# (PostgreSQL 18, in HEATERS_HOME=./.heaters), then run the bundled sample (or the URL/path given)
# through the Dagster graph (ingest -> scenes -> clips -> keyframes + sprites) with the Dagster
# CLI, and print a summary table. Objects land in .heaters/objects.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/heaters demo "$@"
