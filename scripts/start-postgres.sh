#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 and prints its SQLAlchemy URL:
#
#   url=$(bash scripts/start-postgres.sh /tmp/slimsearch-pg 5433)
#   slimsearch run search.toml --storage "$url"
#   bash scripts/stop-postgres.sh /tmp/slimsearch-pg
#
# DATA_DIR is created if missing (its cluster is reused if it already has one). Trust
# authentication on loopback only, fsync off: for tests and single-machine trials, not for
# production. PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
# system user (made by the Debian package) and DATA_DIR is handed to it.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
    echo "usage: start-postgres.sh DATA_DIR [PORT (default 5433)] [DATABASE (default slimsearch)]" >&2
    exit 2
fi
DATA_DIR=$(realpath -m "$1")
PORT=${2:-5433}
DATABASE=${3:-slimsearch}
case "$PORT" in ''|*[!0-9]*) echo "start-postgres.sh: PORT must be a number, but got '$PORT'" >&2; exit 2;; esac

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$BIN" ]; then
    echo "start-postgres.sh: PostgreSQL is not installed; run scripts/install-postgres.sh first" >&2
    exit 1
fi

RUNUSER=$(command -v runuser || echo /usr/sbin/runuser)  # util-linux; /usr/sbin may not be on PATH
as_owner() {  # run a server command as the user that owns the cluster
    if [ "$(id -u)" -eq 0 ]; then "$RUNUSER" -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$DATA_DIR"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$DATA_DIR"
    chmod 700 "$DATA_DIR"
    if ! "$RUNUSER" -u postgres -- test -w "$DATA_DIR"; then
        echo "start-postgres.sh: the postgres user cannot reach $DATA_DIR (a parent folder is private?); pick a DATA_DIR under /tmp" >&2
        exit 1
    fi
fi
cd /  # the server user may not be allowed into the caller's working directory

if [ ! -f "$DATA_DIR/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$DATA_DIR" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$DATA_DIR.initdb.log" 2>&1 \
        || { cat "$DATA_DIR.initdb.log" >&2; exit 1; }
fi
if ! as_owner "$BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; then
    # The socket goes in DATA_DIR: /var/run/postgresql may not exist where no service manager ran.
    as_owner "$BIN/pg_ctl" -D "$DATA_DIR" -l "$DATA_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA_DIR -c fsync=off -c max_connections=200" >/dev/null \
        || { cat "$DATA_DIR/server.log" >&2; exit 1; }
fi
if ! as_owner "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1; then
    as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DATABASE"
fi
echo "postgresql+psycopg2://postgres@127.0.0.1:$PORT/$DATABASE"
