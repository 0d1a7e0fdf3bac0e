"""A throw-away Airflow installation: temporary AIRFLOW_HOME, SQLite metadata DB, our dags/ and plugins/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def find_repo_root() -> Path:
    """The secure-data source checkout the test kit works in (its ``dags/``, ``plugins/`` and ``.cache/``).

    ``$SECURE_DATA_REPO_ROOT`` when set; otherwise the nearest folder above this file, then above the
    working directory, that holds ``plugins/secure_data`` and ``dags/``. The kit is a dev-only distribution
    (``testkit/``, installed editable by ``scripts/bootstrap.sh``), so the first lookup finds the checkout it
    was installed from; a clear error otherwise.
    """
    env = os.environ.get("SECURE_DATA_REPO_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "plugins" / "secure_data").is_dir() and (folder / "dags").is_dir():
                return folder
    raise RuntimeError("secure_data_testkit needs a secure-data source checkout: set SECURE_DATA_REPO_ROOT "
                       "or run from inside one")


REPO_ROOT = find_repo_root()


def airflow_env(
    home: str | os.PathLike,
    *,
    dags_folder: str | os.PathLike | None = None,
    plugins_folder: str | os.PathLike | None = None,
    executor: str = "LocalExecutor",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment variables for an isolated Airflow with a SQLite DB under ``home``."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder or REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(REPO_ROOT / ".cache" / "ultralytics"),
        # So `import secure_data` works in every Airflow process even without `pip install .`.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT / "plugins"), str(REPO_ROOT / "testkit"), os.environ.get("PYTHONPATH", ""))
            if p
        ),
    }
    if extra:
        env.update(extra)
    return env


def migrate_db(env: dict[str, str]) -> None:
    """Create the metadata DB (``airflow db migrate``) in a subprocess with ``env``."""
    full = {**os.environ, **env}
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], env=full, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def register_dag(dag) -> None:
    """Serialize an in-test DAG into the metadata DB: ``dag.test()`` needs it there, and it is in no bundle."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=None, collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def xcom_return_value(home: str | os.PathLike, dag_id: str, task_id: str):
    """The ``return_value`` XCom of a task, read straight from the SQLite metadata DB (None if absent)."""
    import json
    import sqlite3

    with sqlite3.connect(Path(home) / "airflow.db") as db:
        row = db.execute("select value from xcom where dag_id=? and task_id=? and key='return_value'",
                         (dag_id, task_id)).fetchone()
    return None if row is None else json.loads(row[0])


def run_artifacts_text(home: str | os.PathLike, dag_id: str, *dirs: str | os.PathLike) -> list[str]:
    """Everything a run left behind, as text, for leak scans: every file under ``dirs`` and the
    Airflow logs, plus the rendered template fields stored for ``dag_id`` in the metadata DB."""
    import sqlite3

    texts = []
    for base in (*dirs, Path(home) / "logs"):
        texts += [p.read_bytes().decode("utf-8", "replace") for p in Path(base).rglob("*") if p.is_file()]
    with sqlite3.connect(Path(home) / "airflow.db") as db:
        texts += [str(v) for (v,) in db.execute(
            "select rendered_fields from rendered_task_instance_fields where dag_id=?", (dag_id,))]
    return texts
