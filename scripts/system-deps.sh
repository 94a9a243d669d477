#!/usr/bin/env bash
# The system packages streamlearn needs beyond Python: Java + Maven (the local Kafka broker)
# and, for the test suite, a PostgreSQL server (the registry's PostgreSQL backend is tested
# against a real one). Installs what is missing with apt-get when run as root; otherwise
# names what to install.
set -euo pipefail
need_tests="${1:-}"
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ "$need_tests" = "--tests" ] && ! command -v initdb >/dev/null \
    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "error: missing system packages: ${missing[*]} (install them, e.g. with apt-get)" >&2
  exit 1
fi
