"""Every file in dags/ parses through Airflow's DagBag with zero import errors, fast, without heavy imports."""

from __future__ import annotations

import subprocess
import sys

from secure_data.testing.airflow_env import REPO_ROOT

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
