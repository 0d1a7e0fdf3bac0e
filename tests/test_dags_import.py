"""Every file in dags/ parses through Airflow's DagBag with zero import errors, fast, without heavy imports."""

from __future__ import annotations

import subprocess
import sys

from secure_data_testkit.airflow_env import REPO_ROOT

HEAVY = ("torch", "torchvision", "ultralytics", "great_expectations", "cv2", "onnxruntime")


def test_dagbag_has_no_import_errors(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    assert bag.dag_ids, "dags/ defines no DAG"


def test_dag_files_do_not_import_heavy_libraries(airflow_home):
    code = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO_ROOT / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    marker = [line for line in out.stdout.splitlines() if line.startswith("HEAVY=")]
    assert marker == ["HEAVY="], marker


def test_dag_level_access_control_comes_from_the_role_settings(airflow_home, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert all(bag.dags[d].access_control is None for d in ("secure_pretraining_sanitization", "secure_training"))

    monkeypatch.setenv("SECURE_DATA_SANITIZER_ROLE", "DataSanitizer")
    monkeypatch.setenv("SECURE_DATA_TRAINER_ROLE", "ModelTrainer")
    monkeypatch.setenv("SECURE_DATA_VIEWER_ROLE", "SanitizationViewer")
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    sanitize, train = bag.dags["secure_pretraining_sanitization"], bag.dags["secure_training"]
    runner = {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}
    reader = {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}
    assert sanitize.access_control == {"DataSanitizer": runner, "SanitizationViewer": reader}
    assert train.access_control == {"ModelTrainer": runner, "SanitizationViewer": reader}
    # the trainer role gets nothing on the sanitization DAG, and the other way round
    assert "ModelTrainer" not in sanitize.access_control and "DataSanitizer" not in train.access_control
