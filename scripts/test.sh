#!/usr/bin/env bash
# Install everything the test suite needs, then run it: lint, types, unit and integration tests.
# Debian packages: prometheus (promtool + server for the scrape test), prometheus-alertmanager (amtool),
# nsd (DNS tests), chromium (status page). Python: a venv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# prometheus-alertmanager: amtool (config check, route tests) and the Alertmanager binary (inhibition test).
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# docker-compose: validates deploy/compose/docker-compose.yml offline (`config -q`); no Docker engine needed.
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
# nsd: a real authoritative DNS server for the DNS check tests (tests/dnsinfra).
command -v nsd >/dev/null 2>&1 || need_apt+=(nsd)
# libkrb5-dev + gcc: the Dockerfile's install step builds gssapi (Kerberos); a test repeats that step.
[ -e /usr/include/gssapi/gssapi.h ] || need_apt+=(libkrb5-dev)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
# chromium: a real headless browser loads the status page (tests/integration/test_status_page.py).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"
.venv/bin/ruff check exporter tests bench dashboards deploy
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
