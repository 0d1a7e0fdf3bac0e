"""The dev venv is exactly the lock: pyproject.toml has lower bounds only, so scripts/bootstrap.sh must install
every distribution at the version constraints.txt pins, and nothing the lock does not know."""

from __future__ import annotations

import importlib.metadata as md
import re

from secure_data_testkit.airflow_env import REPO_ROOT

OURS = {"secure-data", "secure-data-testkit"}
# Installed by venv/ensurepip itself, or by the build of our editable installs, not by the lock.
TOOLING = {"pip", "setuptools", "wheel"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_installed_distributions_are_the_locked_versions():
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_norm(name.split("[")[0])] = version.split(";")[0].strip()
    assert len(pins) > 100, "constraints.txt is not the full lock"
    installed = {_norm(d.metadata["Name"]): d.version for d in md.distributions()}
    assert OURS <= set(installed), "the product and the test kit are installed (editable) by the bootstrap"
    off = {n: (v, pins[n]) for n, v in installed.items() if n in pins and pins[n] != v}
    assert not off, f"installed != constraints.txt: {off}"
    unknown = sorted(set(installed) - set(pins) - OURS - TOOLING)
    assert not unknown, f"installed but not in the lock: {unknown}"
