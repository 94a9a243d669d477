#!/usr/bin/env bash
# Prints the path of a Docker Compose CLI plugin, building it once from its Go module (cached
# under ~/.cache/streamlearn/tools, like kustomize) when missing. Used by scripts/compose-test.sh
# on machines where Docker's own package repository is not reachable.
set -euo pipefail
version=v5.6.0  # builds with the Go toolchain of this machine (1.26)
cache="${STREAMLEARN_CACHE_DIR:-$HOME/.cache/streamlearn}"
bin="$cache/tools/compose-$version/docker-compose"
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "error: Go is needed to build the compose plugin" >&2; exit 1; }
  echo "building docker compose $version from its Go module (once; a few minutes)" >&2
  export GOMODCACHE="$cache/go-mod" GOCACHE="$cache/go-build" GOTOOLCHAIN=local \
    GOFLAGS=-buildvcs=false CGO_ENABLED=0
  # `go install module@version` refuses compose's go.mod (exclude directives): build inside
  # the downloaded module instead, as its own main module.
  src="$(go mod download -json "github.com/docker/compose/v5@$version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "$(dirname "$bin")"
  (cd "$src" && nice -n 10 go build -trimpath -o "$bin.tmp" \
    -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$version" ./cmd) >&2
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
