#!/usr/bin/env bash
# Install what opencs needs on a fresh Debian/Ubuntu machine: system packages (when root) and a
# virtualenv in .venv with the pinned Python dependencies. Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(docker.io docker-registry busybox-static iproute2 iptables postgresql haproxy openssh-server
      containerd runc crun containernetworking-plugins gcc libc6-dev curl  # this line: Kubernetes nodes (curl: attach scripts)
      chromium  # the web console's end-to-end test (Playwright drives Debian's Chromium)
      prometheus prometheus-alertmanager  # the optional monitoring stack (opencs monitoring enable)
      influxdb)  # InfluxDB 1.x: the monitoring add-on's test (tests/monitoring/test_influxdb.py)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${DEBS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  command -v npm >/dev/null || missing+=(npm)  # the console's assets (any npm will do: nodejs may bring its own)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> apt-get install ${missing[*]}"
    apt-get update -qq
    # a policy-rc.d that says "no" keeps the packages' own services (a host dockerd, sshd, ...)
    # from starting: opencs runs its own engines and starts PostgreSQL itself when testing
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
  fi
else
  echo "==> not root (or no apt-get): skipping system packages (${DEBS[*]}); local nodes need root" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "==> pip install -e .[test]"
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi

# the web console's htmx, from the npm registry at the pinned versions (web/package-lock.json); without
# it the console's pages say so and its end-to-end test fails, the rest of opencs is unaffected
scripts/console-assets.sh || echo "==> WARNING: the console's assets could not be installed (see above)" >&2
