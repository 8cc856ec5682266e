#!/usr/bin/env bash
# Run opencs, embedded default: API + task workers in one process, SQLite and node state in
# ./opencs-data, listening on 127.0.0.1:8990. Extra arguments go to `opencs server`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/opencs server --data-dir "${OPENCS_DATA_DIR:-./opencs-data}" "$@"
