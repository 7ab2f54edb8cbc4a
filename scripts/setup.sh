#!/usr/bin/env bash
# Install everything Heaters needs on a fresh Debian/Ubuntu machine, idempotently:
#   - system packages through apt where missing: ffmpeg, python3 with venv support
#   - a virtual environment in .venv with the project (editable) and the extras asked for
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh dev   or   scripts/setup.sh dev,ml
# A re-run with unchanged pyproject.toml and extras installs nothing (stamp in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1-}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi

stamp=".venv/.heaters-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) extras=${EXTRAS}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: installing Python packages (extras: ${EXTRAS:-none})" >&2
.venv/bin/python -m pip install -q --upgrade pip >&2
spec="."
[ -n "$EXTRAS" ] && spec=".[${EXTRAS}]"
.venv/bin/python -m pip install -q -e "$spec" >&2
if [[ ",$EXTRAS," == *",dev,"* ]]; then
  # PySceneDetect is the benchmark/test reference. Its wheel pins the GUI OpenCV build, which
  # would overwrite the headless one we depend on; install it without dependencies (its other
  # dependencies are in the dev extra) so the project keeps opencv-python-headless.
  .venv/bin/python -m pip install -q --no-deps "scenedetect==0.7.2" >&2
fi
echo "$want" > "$stamp"
