#!/bin/sh
# Debian packages the test suite needs:
#   chromium (+ fonts)   headless rendering test of the run report
#   redis-server         broker of the real Celery deployment (tests/security/test_celery_deployment.py,
#   postgresql           make demo EXECUTOR=celery) and its metadata DB; the test fixtures start them
# Installs only what is missing, only as root with apt-get; otherwise says what to install.
set -eu
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium fonts-dejavu-core"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "note: install Debian's$missing (the tests that need them are skipped without them outside CI)" >&2
fi
