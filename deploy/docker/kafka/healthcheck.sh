#!/bin/bash
# Healthy once the broker has said it started and its listener accepts connections:
#   healthcheck.sh <port>
set -euo pipefail
grep -q 'Kafka Server started' /tmp/kafka/logs/server.log
exec 3<>"/dev/tcp/127.0.0.1/${1:?usage: healthcheck.sh PORT}"
