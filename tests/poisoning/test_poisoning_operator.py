"""PoisoningOperator inside a real Airflow run (dag.test, SQLite): templated upstream XCom, policies, fail."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import StageResult
from secure_data_testkit.airflow_env import register_dag, xcom_return_value
from secure_data_testkit.attacks import inject_attack


def _dag(dag_id: str, root: Path, out: Path, **operator_kwargs):
    from airflow.sdk import DAG, task

    from secure_data.operators.poisoning import PoisoningOperator

    params = {"outlier_policy": "warn", "trigger_policy": "quarantine", "radius": 8, "reference": None}
    with DAG(dag_id, schedule=None, params=params, render_template_as_native_obj=True) as dag:
        @task
        def integrity() -> dict:
            from secure_data_testkit.attacks import integrity_like_manifest

            return integrity_like_manifest(root, out / "integrity").to_xcom()

        PoisoningOperator(
            task_id="poisoning", upstream=integrity(), output_root=str(out),
            reference_manifest="{{ params.reference }}",
            config={"outlier_policy": "{{ params.outlier_policy }}", "trigger_policy": "{{ params.trigger_policy }}",
                    "near_dup_radius": "{{ params.radius }}"},
            retries=0, **operator_kwargs,
        )
    register_dag(dag)
    return dag


def test_operator_screens_the_upstream_xcom_and_returns_a_stage_result(airflow_home, clean_root, tmp_path):
    ds = inject_attack(clean_root, tmp_path / "attacked", attack="trigger_vanish", rate=0.05, seed=2)
    dag_id = f"poisoning_op_{uuid.uuid4().hex[:8]}"
    dag = _dag(dag_id, ds.root, tmp_path / "out")
    assert dag.test().state == "success"

    value = xcom_return_value(airflow_home, dag_id, "poisoning")
    result = StageResult.from_xcom(value)
    assert result.stage == "poisoning" and result.data_root == str(ds.root)
    assert Path(result.manifest_path).is_relative_to(tmp_path / "out" / dag_id)
    manifest = read_manifest(result.manifest_path, expected_digest=result.manifest_digest)
    assert manifest.header["config"]["policies"]["box_outlier"] == "warn"  # from params, rendered natively
    quarantined = {r.sample for r in manifest.records if r.status == "quarantined"}
    assert quarantined == set(ds.poisoned) and result.extra["quarantined_samples"] == len(ds.poisoned)
    # XCom: paths, digests, counts; no sample lists, no pixels
    assert len(json.dumps(value)) < 2000 and not any(k in json.dumps(value) for k in ds.poisoned)


def test_fail_policy_fails_the_task_without_retry(airflow_home, clean_root, tmp_path):
    ds = inject_attack(clean_root, tmp_path / "attacked", attack="trigger_random", rate=0.05, seed=2)
    dag_id = f"poisoning_fail_{uuid.uuid4().hex[:8]}"
    dag = _dag(dag_id, ds.root, tmp_path / "out", trigger_patch="fail")
    assert dag.test().state == "failed"
    assert xcom_return_value(airflow_home, dag_id, "poisoning") is None
    findings = list((tmp_path / "out").rglob("findings.jsonl"))
    assert len(findings) == 1 and "trigger_patch" in findings[0].read_text()


def test_bad_policy_is_refused_at_dag_parse_time():
    from secure_data.operators.poisoning import PoisoningOperator

    with pytest.raises(ValueError, match="trigger_patch"):
        PoisoningOperator(task_id="x", upstream={}, trigger_patch="delete")
    PoisoningOperator(task_id="y", upstream={}, trigger_patch="{{ params.p }}", duplicate="quarantine")
