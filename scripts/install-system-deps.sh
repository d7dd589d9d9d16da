#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when missing: PostgreSQL (server binaries).
set -euo pipefail
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
if have_pg; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "PostgreSQL server binaries are missing: install Debian's 'postgresql' package (apt-get install postgresql)." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
have_pg
