#!/usr/bin/env bash
# Installs Debian packages quietly, as root or through sudo: `apt-install.sh WHAT PACKAGE...`
# (WHAT names the caller in the error). Shared by install-chromium.sh and install-postgres.sh.
set -euo pipefail

what="$1"
shift
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "$what: the packages $* are missing and this is not root (uid $(id -u)); run it as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
