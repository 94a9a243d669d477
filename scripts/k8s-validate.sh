#!/usr/bin/env bash
# Prints the path of a kubernetes-validate executable (it ships the Kubernetes JSON schemas:
# no network at validation time), installing it once into its own virtualenv under
# ~/.cache/streamlearn/tools (like kustomize.sh), outside the project's lock. The tests in
# tests/unit/test_k8s_policy.py call it through this script.
#   scripts/k8s-validate.sh                 the executable's path
#   scripts/k8s-validate.sh --run ARGS...   run it, e.g. --run -k 1.34.0 --strict FILE
set -euo pipefail
version=1.37.0
cache="${STREAMLEARN_CACHE_DIR:-$HOME/.cache/streamlearn}"
home="$cache/tools/kubernetes-validate-$version"
bin="$home/bin/kubernetes-validate"
if [ ! -f "$home/.installed" ]; then
  mkdir -p "$(dirname "$home")"
  exec 9>"$home.lock"
  command -v flock >/dev/null && flock 9  # two test runs at once install it once
fi
if [ ! -f "$home/.installed" ]; then
  python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  echo "installing kubernetes-validate $version into $home" >&2
  rm -rf "$home"
  "$python" -m venv "$home"
  "$home/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$version" >&2
  touch "$home/.installed"  # last: an interrupted install is redone, never half used
fi
if [ "${1:-}" = "--run" ]; then
  shift
  exec "$bin" "$@"
fi
echo "$bin"
