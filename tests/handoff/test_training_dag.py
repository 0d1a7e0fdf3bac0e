"""dags/secure_training.py end to end on CPU: verify, decrypt, train yolo11n for one epoch, wipe."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from secure_data.handoff.package import build_package, sources_from_directory
from secure_data_testkit.airflow_env import REPO_ROOT
from secure_data_testkit.vault_fixtures import vault_connection_env


@pytest.fixture
def scratch_made(monkeypatch) -> list[Path]:
    """The scratch directories this test's training run made (counting /dev/shm/secure-data-* raced with
    other test processes' training runs under pytest-xdist)."""
    from secure_data.handoff import consumer

    made: list[Path] = []
    real_scratch = consumer.make_private_scratch

    def recording_scratch(*args, **kwargs):
        made.append(real_scratch(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(consumer, "make_private_scratch", recording_scratch)
    return made


def test_training_dag_trains_on_the_package_and_reports_its_id(airflow_home, openbao, vault, sanitizer_ks,
                                                                small_dataset, tmp_path, monkeypatch, scratch_made):
    from airflow.dag_processing.dagbag import DagBag

    for name, value in vault_connection_env(openbao, "trainer").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SECURE_DATA_MODELS_ROOT", str(tmp_path / "models"))
    policy = "sha256:" + "e" * 64  # the trainer accepts packages made under this deployment policy only
    monkeypatch.setenv("SECURE_DATA_TRAINER_POLICY_DIGESTS", policy)
    info = build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer_ks, name="train",
                         upstream={"policy": policy})

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "secure_training.py"))
    assert bag.import_errors == {}
    dag = bag.get_dag("secure_training")
    run = dag.test(run_conf={"package_uri": info.uri, "package_id": info.package_id})
    assert run.state == "success"
    assert scratch_made, "the training task decrypted nowhere"
    assert not [p for p in scratch_made if p.exists()], "the decrypted scratch directory was not wiped"

    db = sqlite3.connect(airflow_home / "airflow.db")
    (raw,) = db.execute("select value from xcom where dag_id='secure_training' and run_id=? and task_id='train' "
                        "and key='return_value'", (run.run_id,)).fetchone()
    result = json.loads(raw)
    assert result["package_id"] == info.package_id and result["manifest_digest"] == info.manifest_digest
    weights = Path(result["result"]["weights"])
    assert weights.is_file() and weights.is_relative_to(tmp_path / "models" / info.package_id)
    import hashlib

    assert hashlib.sha256(weights.read_bytes()).hexdigest() == result["result"]["weights_sha256"]
    # plots=False: no training mosaics (plaintext pixels) outside the scratch space
    from secure_data.dataset.layout import IMAGE_SUFFIXES

    written = [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    assert written and not [p for p in written if p.suffix.lower() in IMAGE_SUFFIXES], written


def test_training_dag_refuses_a_package_of_another_id(airflow_home, openbao, vault, sanitizer_ks, small_dataset,
                                                       tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    for name, value in vault_connection_env(openbao, "trainer").items():
        monkeypatch.setenv(name, value)
    info = build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer_ks, name="train")
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "secure_training.py"),
                 ).get_dag("secure_training")
    run = dag.test(run_conf={"package_uri": info.uri, "package_id": "train-someotherpackage"})
    assert run.state == "failed"
