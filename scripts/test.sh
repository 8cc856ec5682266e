#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (scripts/bootstrap.sh), starts
# Debian's PostgreSQL for the store tests, fetches the Swarm-era SDK classes, builds the pinned
# Kubernetes binary, checks lint, import layering and types, runs pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k auth).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

# PostgreSQL: start the packaged cluster (no systemd here) and make a test role
if [ -z "${OPENCS_TEST_PG_URL:-}" ] && command -v pg_lsclusters >/dev/null && [ "$(id -u)" = 0 ]; then
  read -r ver name _ < <(pg_lsclusters -h | head -1)
  pg_ctlcluster "$ver" "$name" start 2>/dev/null || true
  for _ in $(seq 50); do su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break; sleep 0.2; done
  su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='opencs'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"create role opencs login superuser password 'opencs'\""
  su postgres -c "psql -qAtc \"select 1 from pg_database where datname='opencs'\"" | grep -q 1 ||
    su postgres -c "psql -qc 'create database opencs owner opencs'"
  export OPENCS_TEST_PG_URL=postgresql://opencs:opencs@127.0.0.1:5432/opencs
fi

# the Swarm-era request classes (aliyun-python-sdk-cs 2.9.1) live beside 4.8.1, loaded by path
export OPENCS_SDK291_DIR=${OPENCS_SDK291_DIR:-$PWD/.cache/sdk291}
if ! ls "$OPENCS_SDK291_DIR"/aliyun-python-sdk-cs-2.9.1*.tar.gz >/dev/null 2>&1; then
  .venv/bin/pip download -q --no-deps --no-binary :all: -d "$OPENCS_SDK291_DIR" aliyun-python-sdk-cs==2.9.1
fi

# the pinned Kubernetes binary (a warm cache makes this a no-op); its tests skip where Go is absent
if command -v go >/dev/null || [ -x /usr/local/go/bin/go ]; then
  PATH=$PATH:/usr/local/go/bin scripts/build-kubernetes.sh
fi

# the checks that keep the architecture (docs/ARCHITECTURE.md): lint, layering contracts, types
.venv/bin/ruff check src tests bench
.venv/bin/lint-imports --no-cache
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
