#!/usr/bin/env bash
# The test command (README, CI): install what is missing, check format, lint and types (mypy),
# run the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k scenes -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,ml,ray
if ! command -v chromium >/dev/null 2>&1; then
  # The review page's browser tests drive Debian's Chromium through Playwright.
  echo "test.sh: installing chromium (apt)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
fi
if ! command -v ip >/dev/null 2>&1; then
  # The multi-host Ray test builds simulated hosts with network namespaces (ip netns).
  echo "test.sh: installing iproute2 (apt)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iproute2 >&2
fi
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
