#!/usr/bin/env bash
# Stops a cluster started by scripts/start-postgres.sh: stop-postgres.sh DATA_DIR [--remove]
# (--remove also deletes DATA_DIR). Does nothing for a cluster that is not running.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: stop-postgres.sh DATA_DIR [--remove]" >&2
    exit 2
fi
DATA_DIR=$(realpath -m "$1")
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
cd /
if [ -n "$BIN" ] && [ -f "$DATA_DIR/PG_VERSION" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        "$(command -v runuser || echo /usr/sbin/runuser)" -u postgres -- "$BIN/pg_ctl" -D "$DATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    else
        "$BIN/pg_ctl" -D "$DATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    fi
fi
if [ "${2:-}" = "--remove" ]; then
    rm -rf "$DATA_DIR" "$DATA_DIR.initdb.log"
fi
