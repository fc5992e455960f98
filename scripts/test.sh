#!/usr/bin/env bash
# The test command of the README: set up everything the tests need on a fresh Debian machine,
# then run lint, type checks and the whole test suite (unit + integration against real servers).
set -euo pipefail
cd "$(dirname "$0")/.."

# Real servers the integration tests start (design.md): Mosquitto, VictoriaMetrics, InfluxDB 1.x;
# and what the report tests draw with.
missing=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v victoria-metrics >/dev/null || missing+=(victoria-metrics)
command -v influxd >/dev/null || missing+=(influxdb)
# The clustered broker of tests/test_cluster.py (NATS JetStream with its MQTT adapter).
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
# A CJK font, so that the daily report's plot draws its Chinese title and labels.
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
# The browser the console tests drive (Selenium, pointed at /usr/bin/chromedriver: Selenium
# Manager never downloads a driver or a browser; SE_OFFLINE below makes sure).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy
SE_OFFLINE=true .venv/bin/pytest "$@"
