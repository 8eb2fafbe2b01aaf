#!/usr/bin/env bash
# Installs Debian's chromium for the report's browser tests (tests/reports). Idempotent and quiet:
# it does nothing when /usr/bin/chromium is already there. The tests drive this binary through
# playwright's `executable_path`, so no browser is ever downloaded by playwright itself.
# Needs root (CI runs as root); with sudo available it uses it.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-chromium.sh: /usr/bin/chromium is missing and this is not root (uid $(id -u)); run it as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# fonts-liberation: the screenshot has real glyphs rather than boxes on a minimal image.
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
/usr/bin/chromium --version 2>/dev/null  # the Debian wrapper warns on some kernels; the version line is what matters
