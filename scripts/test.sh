#!/usr/bin/env bash
# The test command (README, CI): install what is missing, lint, run the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k scenes -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,ml
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
