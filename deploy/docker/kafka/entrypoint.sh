#!/bin/bash
# Writes server.properties from the environment (the apache/kafka image's convention: drop
# KAFKA_, lower case, `___` -> `-`, `__` -> `_`, `_` -> `.`), formats the log directory once
# (KRaft) and runs the broker in the foreground; SIGTERM shuts it down cleanly.
# Secure mode (docker-compose.secure.yml): STREAMLEARN_KAFKA_ADMIN_PASSWORD_FILE names the
# super user's SCRAM password (STREAMLEARN_KAFKA_ADMIN_USER, default admin), read from the file
# so that it is in no environment: the broker's own login on the inter-broker (SASL) listener
# goes into server.properties (0600) and the credential into the first metadata at format
# time, as `streamlearn kafka start` does for its secure broker (shared/kafka/local/files.py).
set -euo pipefail
umask 077 # server.properties may hold the admin's password
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
if [ -n "${STREAMLEARN_KAFKA_ADMIN_PASSWORD_FILE:-}" ]; then
  admin=${STREAMLEARN_KAFKA_ADMIN_USER:-admin}
  password=$(<"$STREAMLEARN_KAFKA_ADMIN_PASSWORD_FILE")
  # The characters a JAAS line and StorageTool's --add-scram take unquoted.
  if ! [[ $admin =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ && $password =~ ^[A-Za-z0-9_-]{16,256}$ ]]; then
    echo "entrypoint: the admin's name or the password in $STREAMLEARN_KAFKA_ADMIN_PASSWORD_FILE is unusable" >&2
    exit 1
  fi
  listener=$(sed -n 's/^inter\.broker\.listener\.name=//p' "$config")
  [ -n "$listener" ] || { echo "entrypoint: SCRAM needs KAFKA_INTER_BROKER_LISTENER_NAME" >&2; exit 1; }
  printf 'listener.name.%s.scram-sha-512.sasl.jaas.config=%s required username="%s" password="%s";\n' \
    "${listener,,}" org.apache.kafka.common.security.scram.ScramLoginModule "$admin" "$password" >>"$config"
  format+=(--add-scram "SCRAM-SHA-512=[name=$admin,password=$password]")
  unset password
fi
java -cp "$classpath" kafka.tools.StorageTool "${format[@]}"
# shellcheck disable=SC2086 # the options are words
exec java $KAFKA_HEAP_OPTS -XX:+UseG1GC -Djava.awt.headless=true ${KAFKA_OPTS:-} \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  -cp "$classpath" kafka.Kafka "$config"
