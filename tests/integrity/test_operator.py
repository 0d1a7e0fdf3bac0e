"""IntegrityOperator inside a real Airflow run (dag.test, SQLite): XCom, templating, fail policy, Vault creds."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import StageResult
from secure_data_testkit.airflow_env import register_dag, run_artifacts_text, xcom_return_value


def _flat(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), value


def test_operator_runs_in_dag_test_and_xcom_has_only_paths_digests_counts(airflow_home, dataset, tmp_path):
    from airflow.sdk import DAG, task

    from secure_data.operators.integrity import IntegrityOperator

    (dataset / "images" / "train" / "text.jpg").write_text("not an image")
    seen = tmp_path / "downstream.json"
    dag_id = f"integrity_op_{uuid.uuid4().hex[:8]}"
    params = {"dataset": str(dataset), "out": str(tmp_path / "out"), "max_pixels": 1_000_000,
              "reference_manifest": None, "tamper_policy": "warn"}
    with DAG(dag_id, schedule=None, params=params, render_template_as_native_obj=True) as dag:
        # the shape the main DAG uses: native rendering, config values from params
        result = IntegrityOperator(task_id="integrity", source="{{ params.dataset }}",
                                   output_root="{{ params.out }}", reference_manifest="{{ params.reference_manifest }}",
                                   config={"workers": 2, "max_pixels": "{{ params.max_pixels }}",
                                           "tamper_policy": "{{ params.tamper_policy }}"},
                                   background_images="quarantine")

        @task
        def downstream(value: dict) -> None:
            seen.write_text(json.dumps(value))

        downstream(result.output)
    register_dag(dag)
    run = dag.test()
    assert run.state == "success"

    value = xcom_return_value(airflow_home, dag_id, "integrity")
    assert value == json.loads(seen.read_text())  # what the next stage receives
    result = StageResult.from_xcom(value)
    assert result.stage == "integrity" and result.data_root == str(dataset)
    assert Path(result.manifest_path).is_relative_to(tmp_path / "out" / dag_id)
    manifest = read_manifest(result.manifest_path, expected_digest=result.manifest_digest)
    assert result.counts["files"] == 18 and result.counts["quarantined"] == 1
    assert manifest.header["config"]["max_pixels"] == 1_000_000 and manifest.header["config"]["tamper_added"] == "warn"
    assert manifest.by_path()["images/train/text.jpg"].reasons[0].code == "not_an_image"
    # Only paths, digests, counts and flags: no lists of files, no pixels, no free text.
    for key, v in _flat(value):
        assert v is None or isinstance(v, bool | int) or (isinstance(v, str) and len(v) < 300), key
    strings = [v for _, v in _flat(value) if isinstance(v, str)]
    assert all(s.startswith(("sha256:", "/")) or s in ("integrity", "warn", "pass") for s in strings), strings


def test_bad_policy_is_refused_at_dag_parse_time():
    from secure_data.operators.integrity import IntegrityOperator

    with pytest.raises(ValueError, match="orphan_labels"):
        IntegrityOperator(task_id="x", source="/data", orphan_labels="ignore")
    IntegrityOperator(task_id="y", source="/data", background_images="accept", gx_policy="{{ params.gx }}")


def test_operator_fail_policy_fails_the_task(airflow_home, dataset, tmp_path):
    from airflow.sdk import DAG

    from secure_data.operators.integrity import IntegrityOperator

    (dataset / "labels" / "train" / "train_00000.txt").write_text("0 0.5 0.5 0.1\n")
    dag_id = f"integrity_fail_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None) as dag:
        IntegrityOperator(task_id="integrity", source=str(dataset), output_root=str(tmp_path / "out"),
                          invalid_labels="fail", retries=0)
    register_dag(dag)
    run = dag.test()
    assert run.state == "failed"
    assert xcom_return_value(airflow_home, dag_id, "integrity") is None
    manifests = list((tmp_path / "out").rglob("manifest.jsonl"))
    assert len(manifests) == 1 and read_manifest(manifests[0]).header["verdict"] == "fail"


@pytest.fixture
def sanitizer_conn(openbao, monkeypatch):
    from secure_data_testkit.vault_fixtures import bootstrap_test_vault, vault_connection_env

    result = bootstrap_test_vault(openbao)
    for name, value in vault_connection_env(openbao, "sanitizer").items():
        monkeypatch.setenv(name, value)
    return result


def test_object_storage_credentials_come_from_vault_and_never_leak(airflow_home, sanitizer_conn, openbao, dataset,
                                                                     tmp_path, capfd):
    import hvac
    from airflow.sdk import DAG

    from secure_data.operators.integrity import IntegrityOperator

    secret_path = f"{sanitizer_conn.dataset_prefix}/raw"
    root = hvac.Client(url=openbao.url, token=openbao.root_token)
    creds = root.secrets.kv.v2.read_secret_version(path=secret_path, mount_point=sanitizer_conn.kv_mount,
                                                   raise_on_deleted_version=True)["data"]["data"]
    dag_id = f"integrity_vault_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None) as dag:
        IntegrityOperator(task_id="integrity", source=f"file://{dataset}", output_root=str(tmp_path / "out"),
                          storage_secret=secret_path, vault_conn_id="vault_sanitizer", config={"workers": 2})
    register_dag(dag)
    run = dag.test()
    assert run.state == "success"
    value = xcom_return_value(airflow_home, dag_id, "integrity")
    assert value["data_root"].endswith("/source/data")  # mirrored, not read in place
    out = capfd.readouterr()
    assert f"Storage credentials read from Vault path {secret_path}" in out.out + out.err  # control
    haystacks = [json.dumps(value), out.out + out.err, *run_artifacts_text(airflow_home, dag_id, tmp_path / "out")]
    for field in ("access_key_id", "secret_access_key"):
        assert creds[field] and not any(creds[field] in h for h in haystacks), field
