"""Shared fixtures: a real OpenBao server and an isolated Airflow (SQLite) for the whole session.

The Airflow environment is set at import time, before anything imports airflow,
so every test and every `dag.test()` runs against a throw-away AIRFLOW_HOME.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins"))

from secure_data_testkit.airflow_env import airflow_env, migrate_db  # noqa: E402
from secure_data_testkit.openbao import OpenBaoServer  # noqa: E402

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="secure-data-airflow-"))
os.environ.update(airflow_env(_AIRFLOW_HOME))


def pytest_unconfigure(config):
    """Remove this process's throw-away AIRFLOW_HOME (each xdist worker made its own at import)."""
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """An Airflow home with a migrated SQLite metadata DB (created once per session)."""
    if not (_AIRFLOW_HOME / "airflow.db").exists():
        migrate_db(airflow_env(_AIRFLOW_HOME))
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def openbao():
    """A real OpenBao dev server on a free loopback port, stopped at the end of the session."""
    server = OpenBaoServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def small_dataset(tmp_path):
    """A tiny generated YOLO dataset (train 8, val 4)."""
    from secure_data_testkit.datasets import make_yolo_dataset

    return make_yolo_dataset(tmp_path / "dataset", n_train=8, n_val=4, seed=1)
