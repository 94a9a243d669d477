#!/usr/bin/env bash
# `make compose-test`: docker-compose.yml run for real on this machine, end to end.
#  1. installs what is missing: Docker's engine (Debian's docker.io), debootstrap, the compose
#     CLI plugin (built once from its Go module, scripts/compose-plugin.sh);
#  2. starts dockerd if none is running, with `--bridge=none --iptables=false`: containers
#     use host networking only, no container ever gets an address;
#  3. builds the images without any registry (scripts/compose-images.sh: debootstrapped base,
#     wheels from the host, Kafka from the Maven jars), offline and cached;
#  4. runs the stack (docker-compose.yml + docker-compose.local.yml + docker-compose.host.yml),
#     waits for every healthcheck, checks that no container has a network of its own;
#  5. proves the loop from the host: samples in through the SDK, a served version and a
#     prediction out over tritonclient (scripts/compose-loop.py);
#  6. the same stack secured (docker-compose.secure.yml): makes its secrets
#     (scripts/compose-secrets.py), brings it up, and proves the loop as the roles a user takes
#     (the producer's SCRAM credentials over TLS, inference over TLS with a reader's token),
#     a plaintext Kafka client and a token-less inference call refused, no secret in any
#     container's log;
#  7. tears everything down: containers, volumes, networks, the secrets, and the daemon if it
#     started it.
# Ports default to the compose file's; a taken one is replaced by a free one (or set
# STREAMLEARN_KAFKA_PORT, STREAMLEARN_INFERENCE_PORT, ... yourself). KEEP=1 leaves the
# stack running (and the daemon) for a look around; `scripts/compose-test.sh down` ends it.
# `scripts/compose-test.sh secure` runs only the secured stack; SECURE=0 skips it.
#
# `scripts/compose-test.sh pytest [ARGS]` does steps 1-3, then runs `pytest --docker ARGS`:
# pytest-docker starts and stops the same stack (the broker must get port 9092, which
# tests/conftest.py expects), with the override files added to its compose command.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${STREAMLEARN_CACHE_DIR:-$HOME/.cache/streamlearn}"
STATE="$CACHE/docker"
PROJECT="${COMPOSE_PROJECT_NAME:-streamlearn-compose-test}"
FILES=(-f docker-compose.yml -f docker-compose.local.yml -f docker-compose.host.yml)
SECURED=(-f docker-compose.secure.yml)  # added to FILES for the secured stack
SECRETS="$STATE/compose-secrets"  # scripts/compose-secrets.py's directory (removed by down)
started=$SECONDS
log() { printf 'compose-test [%4ds]: %s\n' $((SECONDS - started)) "$*" >&2; }
mkdir -p "$STATE"

compose() { docker compose -p "$PROJECT" "${FILES[@]}" "$@"; }

stop_daemon() {  # only the dockerd this script started (its pid file)
  local pid
  [ -f "$STATE/dockerd.pid.ours" ] || return 0
  pid=$(cat "$STATE/dockerd.pid.ours")
  rm -f "$STATE/dockerd.pid.ours"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping the Docker daemon it started (pid $pid)"
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
    log "warning: dockerd $pid still running"
  fi
}

down() {
  if docker info >/dev/null 2>&1; then
    log "tearing down: containers, volumes, networks"
    # The plain files name every service but kafka-init, which goes as an orphan.
    compose down --volumes --remove-orphans --timeout 30 >&2 || true
  fi
  rm -rf "$SECRETS"
  stop_daemon
}

mode=${1:-run}
case $mode in
  down) down; exit 0 ;;
  pytest) shift ;;
  run | secure) ;;
  *) log "usage: $0 [run | secure | pytest [PYTEST ARGS] | down]"; exit 2 ;;
esac

# 1. What is missing.
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (Debian packages)"
  [ "$(id -u)" = 0 ] || { log "error: needs root to install ${missing[*]}"; exit 1; }
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
fi
command -v docker >/dev/null || { log "error: no docker CLI"; exit 1; }
if ! docker compose version >/dev/null 2>&1; then
  plugin=$(scripts/compose-plugin.sh)
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sfn "$plugin" "$HOME/.docker/cli-plugins/docker-compose"
  log "installed the compose plugin: $(docker compose version)"
fi
scripts/system-deps.sh >&2  # Java and Maven (the Kafka jars), as for `make demo`
[ -x .venv/bin/python ] || scripts/bootstrap.sh >&2

# 2. The daemon.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (--bridge=none --iptables=false; log: $STATE/dockerd.log)"
  setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    --pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$STATE/dockerd.pid.ours"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "error: dockerd did not start"; tail "$STATE/dockerd.log" >&2; stop_daemon; exit 1; }
fi
if [ "${KEEP:-0}" != 1 ]; then trap down EXIT; fi

# Ports: the compose defaults unless taken (someone's `streamlearn up`, another test).
free_port() { .venv/bin/python -c 'from shared.net import free_port; print(free_port())'; }
taken() { ss -Hltn "sport = :$1" | grep -q .; }
for spec in KAFKA:9092 KAFKA_INTERNAL:19092 KAFKA_CONTROLLER:9093 INGESTION:50051 \
  REGISTRY:50052 TRAINER:50053 INFERENCE:8001 INGESTION_METRICS:9101 TRAINER_METRICS:9102 \
  REGISTRY_METRICS:9103 INFERENCE_METRICS:8002 JOINER:50054 JOINER_METRICS:9104; do
  var="STREAMLEARN_${spec%%:*}_PORT"
  if [ -z "${!var:-}" ]; then
    port=${spec##*:}
    taken "$port" && port=$(free_port)
    export "$var=$port"
  fi
done
log "ports: kafka $STREAMLEARN_KAFKA_PORT, inference $STREAMLEARN_INFERENCE_PORT, registry $STREAMLEARN_REGISTRY_PORT"

# 3. Images.
t=$SECONDS
scripts/compose-images.sh all
build_s=$((SECONDS - t))

if [ "$mode" = pytest ]; then
  [ "$STREAMLEARN_KAFKA_PORT" = 9092 ] || { log "error: port 9092 is taken; tests/conftest.py needs it"; exit 1; }
  # pytest-docker runs `docker compose -f docker-compose.yml -p NAME ...`: a `docker` first on
  # PATH adds the two override files before `-p` (tests/conftest.py names only the first).
  shim=$(mktemp -d)
  sed -e "s|@DOCKER@|$(command -v docker)|" -e "s|@ROOT@|$PWD|g" scripts/compose-docker-shim >"$shim/docker"
  chmod +x "$shim/docker"
  log "pytest --docker $*"
  status=0
  PATH="$shim:$PATH" .venv/bin/python -m pytest --docker "$@" || status=$?
  rm -rf "$shim"
  exit $status
fi

# 4. A stack: every healthcheck, host networking only.
stack_up() {  # [compose arguments: the secure override]
  local t=$SECONDS unhealthy net id
  compose "$@" down --volumes --remove-orphans >/dev/null 2>&1 || true
  log "docker compose up (waiting for every healthcheck)"
  compose "$@" up --detach --no-build --pull never --wait --wait-timeout 600 >&2 || {
    log "error: the stack did not become healthy"
    compose "$@" ps -a >&2
    compose "$@" logs --tail 40 >&2
    exit 1
  }
  up_s=$((SECONDS - t))
  compose "$@" ps --format 'table {{.Service}}\t{{.Status}}' >&2
  unhealthy=$(compose "$@" ps --format '{{.Service}} {{.Health}}' | awk '$2 != "healthy"')
  [ -z "$unhealthy" ] || { log "error: not healthy: $unhealthy"; exit 1; }
  # Host networking only: no container address, no network of the project's.
  for id in $(compose "$@" ps -a -q); do
    net=$(docker inspect --format '{{.HostConfig.NetworkMode}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id")
    [ "$net" = "host " ] || { log "error: container $id is on '$net', not the host network only"; exit 1; }
  done
  if docker network ls --format '{{.Name}}' | grep -q "^$PROJECT"; then
    log "error: the project created a network"; exit 1
  fi
}

# 5. The loop, from the host.
loop() {  # [compose arguments] -- [compose-loop.py arguments]
  local t=$SECONDS compose_args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do compose_args+=("$1"); shift; done
  shift
  .venv/bin/python scripts/compose-loop.py --kafka "127.0.0.1:$STREAMLEARN_KAFKA_PORT" \
    --inference "127.0.0.1:$STREAMLEARN_INFERENCE_PORT" "$@" || {
    compose "${compose_args[@]}" logs --tail 60 >&2
    exit 1
  }
  loop_s=$((SECONDS - t))
}

# 6. Passwords and tokens stay in their files: none in any container's log.
no_secret_in_logs() {
  local logs file count=0
  logs=$(compose "${SECURED[@]}" logs --no-color 2>&1)
  for file in "$SECRETS"/secrets/kafka/*.password "$SECRETS"/secrets/grpc/token-*; do
    count=$((count + 1))
    if grep -qF -- "$(cat "$file")" <<<"$logs"; then
      log "error: the secret of $file is in a container's log"; exit 1
    fi
  done
  [ "$count" -ge 8 ] || { log "error: only $count secrets found in $SECRETS"; exit 1; }
  log "no password or token (of $count) in any container's log"
}

summary=()
if [ "$mode" = run ]; then
  stack_up
  loop --
  summary+=("plain: up+healthy ${up_s}s, loop ${loop_s}s")
fi
if [ "$mode" = secure ] || [ "${SECURE:-1}" != 0 ]; then
  log "secured stack: making its secrets into $SECRETS (scripts/compose-secrets.py)"
  .venv/bin/python scripts/compose-secrets.py "$SECRETS" \
    --kafka "127.0.0.1:$STREAMLEARN_KAFKA_PORT" --registry "127.0.0.1:$STREAMLEARN_REGISTRY_PORT" \
    --inference "127.0.0.1:$STREAMLEARN_INFERENCE_PORT" >&2
  export STREAMLEARN_COMPOSE_SECRETS="$SECRETS"
  stack_up "${SECURED[@]}"
  compose "${SECURED[@]}" logs --no-color kafka-init >&2
  loop "${SECURED[@]}" -- --secrets "$SECRETS"
  no_secret_in_logs
  summary+=("secured: up+healthy ${up_s}s, loop ${loop_s}s")
fi

log "images:"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^streamlearn' >&2 || true
log "OK: images ${build_s}s, $(printf '%s; ' "${summary[@]}")total $((SECONDS - started))s"
