#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when missing: the PostgreSQL server (store tests)
# Chromium with its driver (the Connections UI tests, headless) and the Redis server (the Celery broker of
# `make test-cluster`).
set -euo pipefail
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_chromium() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }
have_redis() { command -v redis-server >/dev/null; }
missing=()
have_pg || missing+=(postgresql)
have_chromium || missing+=(chromium chromium-driver)
have_redis || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "Missing Debian packages: ${missing[*]} (install them with apt-get install ${missing[*]})." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged Redis as a service; the tests start their own on a free port.
if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v service >/dev/null; then
  service redis-server stop >/dev/null 2>&1 || true
fi
have_pg && have_chromium && have_redis
