#!/usr/bin/env bash
# Builds the images of the compose stack without any container registry (used by
# scripts/compose-test.sh; each step is cached under ~/.cache/streamlearn/docker):
#   base     Debian bookworm rootfs (debootstrap) imported as streamlearn-base:python3.11 and
#            streamlearn-base:jre17 (the Kafka image's Java)
#   wheels   every wheel of uv.lock's runtime dependencies (plus the uv binary), downloaded on
#            the host from PyPI and imported as streamlearn-wheels:<lock hash>, so the image
#            builds run offline (no container ever talks to the network)
#   app      the project images from deploy/Dockerfile on that base: streamlearn:latest (the
#            trainer), streamlearn:slim (the other services), streamlearn:cuda (GPU trainer)
#   kafka    streamlearn-kafka:<version> from deploy/docker/kafka.Dockerfile and the Maven jars
#            of deploy/local/kafka/pom.xml (the same ones `streamlearn kafka start` runs)
# Usage: scripts/compose-images.sh [base|wheels|app|kafka|all]...   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${STREAMLEARN_CACHE_DIR:-$HOME/.cache/streamlearn}"
DCACHE="$CACHE/docker"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PY_PACKAGES=python3.11,python-is-python3,ca-certificates,libstdc++6,libgomp1
JRE_PACKAGES=openjdk-17-jre-headless,ca-certificates
UV_VERSION=0.13.8
# BuildKit is needed (cache and bind mounts): a CLI with buildx, or Debian's docker.io CLI
# (20.10, BuildKit built in); a newer CLI without buildx would fall back to the legacy builder.
if [ -z "${DOCKER:-}" ]; then
  DOCKER=docker
  if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ] \
    && /usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then
    DOCKER=/usr/bin/docker
  fi
fi
# The builds run with no network at all (--network=none): everything comes from the host.
build() { DOCKER_BUILDKIT=1 nice -n 10 "$DOCKER" build "$@"; }
log() { echo "compose-images: $*" >&2; }
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

rootfs_tarball() {  # name packages -> path of a cached rootfs tarball
  local name=$1 packages=$2 key tarball root
  key=$(echo "$SUITE $packages" | sha256sum | cut -c1-12)
  tarball="$DCACHE/rootfs-$name-$key.tar"
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { log "error: debootstrap is missing"; exit 1; }
    root=$(mktemp -d "${TMPDIR:-/tmp}/streamlearn-rootfs.XXXXXX")
    log "debootstrap $SUITE ($packages) into $root"
    mkdir -p "$DCACHE/debs"
    nice -n 10 debootstrap --variant=minbase --cache-dir="$DCACHE/debs" \
      --include="$packages" "$SUITE" "$root" "$MIRROR" >&2
    # No apt lists, no package cache, no docs in the image.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
      "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  echo "$tarball"
}

base() {
  local tarball
  if ! have_image streamlearn-base:python3.11; then
    tarball=$(rootfs_tarball python "$PY_PACKAGES")
    log "importing $tarball as streamlearn-base:python3.11"
    "$DOCKER" import \
      --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' \
      --change 'LABEL org.opencontainers.image.title=streamlearn-base org.opencontainers.image.description="Debian bookworm (debootstrap) with Python 3.11"' \
      "$tarball" streamlearn-base:python3.11 >/dev/null
  fi
  if ! have_image streamlearn-base:jre17; then
    tarball=$(rootfs_tarball jre "$JRE_PACKAGES")
    log "importing $tarball as streamlearn-base:jre17"
    "$DOCKER" import \
      --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'LABEL org.opencontainers.image.title=streamlearn-base org.opencontainers.image.description="Debian bookworm (debootstrap) with OpenJDK 17 JRE"' \
      "$tarball" streamlearn-base:jre17 >/dev/null
  fi
}

lock_key() { cat uv.lock | sha256sum | cut -c1-12; }

wheels() {
  local key dir uv
  key=$(lock_key)
  have_image "streamlearn-wheels:$key" && return 0
  dir="$DCACHE/wheels-$key"
  uv="$CACHE/tools/uv-$UV_VERSION/bin/uv"
  [ -x "$uv" ] || scripts/bootstrap.sh >&2
  if [ ! -f "$dir/.complete" ]; then
    mkdir -p "$dir"
    "$uv" export --frozen --no-dev --no-emit-project --format requirements-txt \
      -o "$dir/requirements.txt" >/dev/null
    log "downloading the runtime wheels of uv.lock into $dir (once per lock; several GB)"
    # The host is the target (Linux, CPython 3.11, glibc >= bookworm's): its wheels fit the
    # image; hashes are checked against the lock. hatchling builds the project's own wheel.
    nice -n 10 "$CACHE/tools/uv-$UV_VERSION/bin/pip" download --quiet --disable-pip-version-check \
      --no-deps --only-binary=:all: --require-hashes -r "$dir/requirements.txt" -d "$dir" >&2
    nice -n 10 "$CACHE/tools/uv-$UV_VERSION/bin/pip" download --quiet --disable-pip-version-check \
      --only-binary=:all: "hatchling>=1.26" -d "$dir" >&2
    cp "$uv" "$dir/uv"
    touch "$dir/.complete"
  fi
  log "importing the wheels as streamlearn-wheels:$key"
  printf 'FROM scratch\nCOPY . /\n' | build --network=none --quiet -t "streamlearn-wheels:$key" -f - "$dir" >/dev/null
}

app() {
  local key args
  key=$(lock_key)
  args=(--build-arg BASE_IMAGE=streamlearn-base:python3.11
    --build-arg "WHEELS=streamlearn-wheels:$key"
    --build-arg "VERSION=$(git describe --always --dirty 2>/dev/null || echo dev)"
    --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
  log "building streamlearn:latest (deploy/Dockerfile, target runtime)"
  build "${args[@]}" --network=none --target runtime -t streamlearn:latest -f deploy/Dockerfile . >&2
  log "building streamlearn:slim (target runtime-slim: no torch, for ingestion/registry/inference)"
  build "${args[@]}" --network=none --target runtime-slim -t streamlearn:slim -f deploy/Dockerfile . >&2
  # The same layers as streamlearn:latest (PyPI's torch is the CUDA build) plus NVIDIA's
  # variables: built for free, run only where there is a GPU (docker-compose.gpu.yml).
  log "building streamlearn:cuda (target runtime-cuda)"
  build "${args[@]}" --network=none --target runtime-cuda -t streamlearn:cuda -f deploy/Dockerfile . >&2
  # The images these replaced, and build cache beyond what a rebuild needs (a torch layer is
  # ~6 GB; each source edit would otherwise leave one more behind).
  "$DOCKER" image prune --force >/dev/null
  "$DOCKER" builder prune --force --keep-storage "${STREAMLEARN_BUILD_CACHE:-16GB}" >/dev/null
}

kafka() {
  local version jars context
  version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/local/kafka/pom.xml)
  # The jar cache of `streamlearn kafka start` (keyed by the pom), filled by Maven if missing.
  [ -x .venv/bin/python ] || scripts/bootstrap.sh >&2
  jars=$(.venv/bin/python -c 'import sys; from pathlib import Path
from shared.kafka.local.jars import ensure_jars
print(ensure_jars(Path(sys.argv[1])))' "$CACHE")
  context=$(mktemp -d "$DCACHE/kafka-context.XXXXXX")
  mkdir "$context/libs"
  cp -l "$jars"/*.jar "$context/libs/" 2>/dev/null || cp "$jars"/*.jar "$context/libs/"
  cp -r deploy/docker/kafka "$context/kafka"
  log "building streamlearn-kafka:$version from $jars"
  build --network=none -t "streamlearn-kafka:$version" -t streamlearn-kafka:latest \
    --build-arg BASE_IMAGE=streamlearn-base:jre17 --build-arg "KAFKA_VERSION=$version" \
    -f deploy/docker/kafka.Dockerfile "$context" >&2
  rm -rf "$context"
}

[ $# -gt 0 ] || set -- all
for step in "$@"; do
  case $step in
    base | wheels | app | kafka) "$step" ;;
    all) base && wheels && app && kafka ;;
    *) log "unknown step: $step" && exit 2 ;;
  esac
done
