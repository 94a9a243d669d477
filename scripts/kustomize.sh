#!/usr/bin/env bash
# Prints the path of a kustomize binary, building it once from its Go module (cached under
# ~/.cache/streamlearn/tools, like the other tools) when missing. The Kubernetes manifests
# in deploy/k8s are rendered with it by the tests.
set -euo pipefail
version=v5.8.0  # the newest that builds with the Go toolchain of Debian/this machine (1.26)
cache="${STREAMLEARN_CACHE_DIR:-$HOME/.cache/streamlearn}"
bin="$cache/tools/kustomize-$version/kustomize"
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "error: Go is needed to build kustomize" >&2; exit 1; }
  echo "building kustomize $version from its Go module" >&2
  GOBIN="$(dirname "$bin")" GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build" \
    GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    go install "sigs.k8s.io/kustomize/kustomize/v5@$version" >&2
fi
echo "$bin"
