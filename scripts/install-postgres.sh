#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages, for `slimsearch worker` studies and the tests
# marked `postgres`. Idempotent and quiet: it returns at once when a server is already there.
# Needs root (CI runs as root); with sudo available it uses it. It starts no server:
# scripts/start-postgres.sh starts a throwaway one.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
    exit 0
fi

# The `postgresql` package also creates (and, where services run, starts) a default cluster on
# port 5432; the tests never use it, they start their own on a free port.
bash "$(dirname "$0")/apt-install.sh" install-postgres.sh postgresql
ls /usr/lib/postgresql/*/bin/initdb
