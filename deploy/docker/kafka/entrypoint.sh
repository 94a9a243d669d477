#!/bin/bash
# Writes server.properties from the environment (the apache/kafka image's convention: drop
# KAFKA_, lower case, `___` -> `-`, `__` -> `_`, `_` -> `.`), formats the log directory once
# (KRaft) and runs the broker in the foreground; SIGTERM shuts it down cleanly.
set -euo pipefail
run=${STREAMLEARN_KAFKA_RUN_DIR:-/tmp/kafka} # the config and the log the healthcheck reads
config=$run/server.properties
mkdir -p "$run/logs"
: >"$run/logs/server.log" # a restarted container is not healthy before it says so again
: >"$config"
for name in $(compgen -e | sort); do
  case $name in
    KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key=${name#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "${!name}" >>"$config"
done
classpath='/opt/kafka/libs/*'
format=(format --ignore-formatted -t "$CLUSTER_ID" -c "$config")
grep -q '^controller.quorum.voters=' "$config" || format+=(--standalone)
java -cp "$classpath" kafka.tools.StorageTool "${format[@]}"
# shellcheck disable=SC2086 # the options are words
exec java $KAFKA_HEAP_OPTS -XX:+UseG1GC -Djava.awt.headless=true ${KAFKA_OPTS:-} \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  -cp "$classpath" kafka.Kafka "$config"
