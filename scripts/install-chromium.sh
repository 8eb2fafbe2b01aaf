#!/usr/bin/env bash
# Installs Debian's chromium for the report's browser tests (tests/reports). Idempotent and quiet:
# it does nothing when /usr/bin/chromium is already there. The tests drive this binary through
# playwright's `executable_path`, so no browser is ever downloaded by playwright itself.
# Needs root (CI runs as root); with sudo available it uses it.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

# fonts-liberation: the screenshot has real glyphs rather than boxes on a minimal image.
bash "$(dirname "$0")/apt-install.sh" install-chromium.sh chromium fonts-liberation
/usr/bin/chromium --version 2>/dev/null  # the Debian wrapper warns on some kernels; the version line is what matters
