#!/bin/sh
# Debian packages the test suite needs: Chromium (headless rendering test of the run report).
# Installs only what is missing, only as root with apt-get; otherwise says what to install.
set -eu
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
else
    echo "note: install Debian's 'chromium' for the report rendering test (it is skipped without it outside CI)" >&2
fi
