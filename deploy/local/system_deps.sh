#!/usr/bin/env bash
# Debian packages the test suite uses, installed only when missing:
# redis-server (the real Redis), kcat (a third-party Kafka client), prometheus
# (the Prometheus server and promtool, for the rules and dashboard tests),
# chromium (the browser of the tracker's end-to-end test, driven by Playwright
# through executable_path: nothing downloads a browser) and nodejs/npm (the
# tracker's build) when the machine has no Node.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v kcat >/dev/null 2>&1 || command -v kafkacat >/dev/null 2>&1 || missing+=(kcat)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
{ command -v node && command -v npm; } >/dev/null 2>&1 || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing ${missing[*]} with apt-get" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
