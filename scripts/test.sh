#!/usr/bin/env bash
# Install everything the test suite needs, then run it: lint, types, unit and integration tests.
# Debian packages: python3-venv and python3-dev (for Debian's python3), prometheus (promtool + server for
# the scrape test), prometheus-alertmanager (amtool), nsd (DNS tests), chromium (status page),
# krb5-kdc/krb5-admin-server/krb5-user (Kerberos tests), jsonnet (monitoring mixin).
# Python: a venv in .venv, with the test and kerberos extras.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
need_apt=()
# Debian's python3 needs python3-venv for `-m venv` and python3-dev for the headers gssapi compiles against
# (another Python, e.g. the Docker python image or pyenv, brings both).
"$PY" -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
[ -e "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || need_apt+=(python3-dev)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# prometheus-alertmanager: amtool (config check, route tests) and the Alertmanager binary (inhibition test).
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# docker-compose: validates deploy/compose/docker-compose.yml offline (`config -q`); no Docker engine needed.
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
# nsd: a real authoritative DNS server for the DNS check tests (tests/dnsinfra).
command -v nsd >/dev/null 2>&1 || need_apt+=(nsd)
# libkrb5-dev + gcc: gssapi (the kerberos extra) compiles against them; the Dockerfile test repeats that step.
[ -e /usr/include/gssapi/gssapi.h ] || need_apt+=(libkrb5-dev)
# An MIT KDC on loopback for the Kerberos tests (tests/kdc): krb5kdc, kdb5_util, kadmin.local, kinit.
# krb5kdc and kadmin.local live in /usr/sbin, which a non-root PATH may lack.
{ command -v krb5kdc || [ -x /usr/sbin/krb5kdc ]; } >/dev/null 2>&1 || need_apt+=(krb5-kdc krb5-admin-server)
command -v kinit >/dev/null 2>&1 || need_apt+=(krb5-user)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
# jsonnet: renders the monitoring mixin (dashboards/mailflow-mixin) in tests/unit/test_mixin.py.
command -v jsonnet >/dev/null 2>&1 || need_apt+=(jsonnet)
# chromium: a real headless browser loads the status page (tests/integration/test_status_page.py).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# kerberos: gssapi for the Kerberos tests (the simulator's acceptor, the exporter's keytab/ticket cache).
.venv/bin/python -m pip install -q -e '.[test,kerberos]'

echo "== ruff"
.venv/bin/ruff check exporter tests bench dashboards deploy
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# -rfEs: list failures, errors and (allowed, "optional:") skips with their reasons at the end.
.venv/bin/python -m pytest -q -p no:cacheprovider -rfEs "$@"
