#!/bin/sh
# Create the project virtualenv and install the pinned dependencies into it.
# Works on a fresh Debian with only Python 3.11: installs python3-venv when it is missing and we are root.
set -eu
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
        echo "error: $PYTHON has no venv/ensurepip; install python3-venv" >&2; exit 1
    fi
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# constraints.txt is the full, pinned transitive lock (pyproject.toml has lower bounds only): this installs
# exactly the lock. The test kit (testkit/, dev-only) goes in editable, beside the product and its dev extra.
"$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[dev]' -e ./testkit
# A plugins/secure_data.egg-info left by an older install (setup.cfg now writes it under scripts/): Airflow puts
# plugins/ on sys.path, so it was a second copy of the package metadata and Airflow loaded the airflow.plugins
# entry point twice ("Plugin 'secure_data' already registered", a plugin import error on the home page).
rm -rf plugins/secure_data.egg-info
