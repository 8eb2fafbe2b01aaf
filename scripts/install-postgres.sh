#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages, for `slimsearch worker` studies and the tests
# marked `postgres`. Idempotent and quiet: it returns at once when a server is already there.
# Needs root (CI runs as root); with sudo available it uses it. It starts no server:
# scripts/start-postgres.sh starts a throwaway one.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-postgres.sh: PostgreSQL is missing and this is not root (uid $(id -u)); run it as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# The `postgresql` package also creates (and, where services run, starts) a default cluster on
# port 5432; the tests never use it, they start their own on a free port.
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
ls /usr/lib/postgresql/*/bin/initdb
