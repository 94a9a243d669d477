#!/usr/bin/env bash
# Create or reuse streamlearn's Python environment and link it as .venv.
#
# The virtualenv lives outside the clone, under $STREAMLEARN_CACHE_DIR (default
# ~/.cache/streamlearn), in a folder keyed by uv.lock: every clone with the same lock (CI's
# fresh clones included) reuses it, and a changed lock gets a fresh one. uv itself is pinned
# and installed into the cache from PyPI on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
CACHE="${STREAMLEARN_CACHE_DIR:-$HOME/.cache/streamlearn}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"

if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: streamlearn needs Python 3.11 (found: ${PYTHON:-none}); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

UV_HOME="$CACHE/tools/uv-$UV_VERSION"
if [ ! -x "$UV_HOME/bin/uv" ]; then
  echo "installing uv $UV_VERSION into $UV_HOME" >&2
  rm -rf "$UV_HOME"
  "$PYTHON" -m venv "$UV_HOME"
  "$UV_HOME/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

KEY=$(sha256sum uv.lock | cut -c1-16)
VENV="$CACHE/venvs/$KEY"
export UV_CACHE_DIR="$CACHE/uv-cache" UV_PROJECT_ENVIRONMENT="$VENV" UV_PYTHON="$PYTHON"
export UV_PYTHON_DOWNLOADS=never
# --frozen: install exactly the lock; a pyproject that disagrees with it is an error in CI.
"$UV_HOME/bin/uv" sync --frozen --quiet
ln -sfn "$VENV" .venv
