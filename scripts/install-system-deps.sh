#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when missing: the PostgreSQL server (store tests)
# and Chromium with its driver (the Connections UI tests, headless).
set -euo pipefail
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_chromium() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }
missing=()
have_pg || missing+=(postgresql)
have_chromium || missing+=(chromium chromium-driver)
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
have_pg && have_chromium
