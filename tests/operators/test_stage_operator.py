"""The operator base: templated policy overrides render, literal config fails at parse time, one failure
behaviour (AirflowFailException: no retry), the deployment's quarantine-rate gate, public re-exports."""

from __future__ import annotations

import inspect

import pytest

from secure_data.dataset.stage import StageResult
from secure_data_testkit.datasets import make_yolo_dataset


def _dag(**params):
    from airflow.sdk import DAG

    return DAG("stage_operator_test", schedule=None, params=params, render_template_as_native_obj=True)


def test_templated_policy_overrides_and_config_render_into_the_stage_config():
    from secure_data.operators import IntegrityOperator, PoisoningOperator

    with _dag(gx="warn", tamper="quarantine", mp=1234, dup="fail") as dag:
        integrity = IntegrityOperator(task_id="integrity", source="/data", gx_policy="{{ params.gx }}",
                                      tamper_modified="{{ params.tamper }}", config={"max_pixels": "{{ params.mp }}"})
        poisoning = PoisoningOperator(task_id="poisoning", upstream={}, duplicate="{{ params.dup }}")
    context = {"params": dag.params.dump(), "dag": dag, "run_id": "r"}
    for task in (integrity, poisoning):
        task.render_template_fields(context)
    assert (integrity.gx_policy, integrity.tamper_modified) == ("warn", "quarantine")
    config = integrity._config()
    assert (config.gx_policy, config.tamper_modified, config.max_pixels) == ("warn", "quarantine", 1234)
    assert poisoning._config().action("duplicate") == "fail"


def test_a_rendered_policy_that_is_not_an_action_is_refused_before_any_work():
    from secure_data.operators import IntegrityOperator

    with _dag(gx="ignore") as dag:
        task = IntegrityOperator(task_id="integrity", source="/nonexistent", gx_policy="{{ params.gx }}")
    task.render_template_fields({"params": dag.params.dump()})
    with pytest.raises(ValueError, match="gx_policy='ignore'"):
        task.execute({"dag": dag, "run_id": "r"})


def test_literal_config_is_checked_when_the_dag_is_parsed():
    from secure_data.operators import AnonymizeMergeOperator, IntegrityOperator, PoisoningOperator

    with pytest.raises(ValueError, match="max_pixels"):
        IntegrityOperator(task_id="i", source="/data", config={"max_pixels": "many"})
    with pytest.raises(ValueError, match="no detector configured"):
        AnonymizeMergeOperator(task_id="m", upstream={}, shard_results=[])
    with pytest.raises(ValueError):
        PoisoningOperator(task_id="p", upstream={}, config={"policies": {"duplicate": "ignore"}})
    # a template is checked once rendered
    IntegrityOperator(task_id="j", source="/data", config="{{ params.integrity }}")
    AnonymizeMergeOperator(task_id="n", upstream={}, shard_results=[], config="{{ params.anonymize }}")


def test_a_failed_policy_fails_the_task_without_retry_and_outputs_are_written(tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from secure_data.operators import IntegrityOperator

    data = make_yolo_dataset(tmp_path / "ds", n_train=3, n_val=1, seed=5)
    (data / "labels" / "train" / "train_00000.txt").write_text("0 0.5 0.5 0.1\n")  # 4 fields: invalid
    with _dag() as dag:
        task = IntegrityOperator(task_id="integrity", source=str(data), output_root=str(tmp_path / "out"),
                                 invalid_labels="fail")
    with pytest.raises(AirflowFailException, match="policy .fail. fired: label_missing_fields"):
        task.execute({"dag": dag, "run_id": "r"})
    assert task._lineage_value["extra"]["verdict"] == "fail"
    assert len(list((tmp_path / "out").rglob("manifest.jsonl"))) == 1


def _result(files: int, quarantined: int) -> StageResult:
    return StageResult("integrity", "/m", "sha256:" + "0" * 64,
                       {"files": files, "accepted": files - quarantined, "quarantined": quarantined}, "/d", {})


def test_the_quarantine_rate_gate_comes_from_the_deployment(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from secure_data.operators import IntegrityOperator

    task = IntegrityOperator(task_id="integrity", source="/data")
    task.gate(_result(10, 5))  # no limit configured: nothing happens
    monkeypatch.setenv("SECURE_DATA_MAX_QUARANTINE_PERCENT", "20")
    task.gate(_result(10, 2))  # 20 % is not above 20 %
    with pytest.raises(AirflowFailException, match=r"3 of 10 files quarantined \(30.0 %\).*20 %"):
        task.gate(_result(10, 3))
    monkeypatch.setenv("SECURE_DATA_QUARANTINE_GATE", "warn")
    task.gate(_result(10, 3))
    monkeypatch.setenv("SECURE_DATA_QUARANTINE_GATE", "off")
    with pytest.raises(ValueError, match="QUARANTINE_GATE"):
        task.gate(_result(10, 3))


def test_public_operators_are_reexported_with_full_signatures():
    import secure_data.operators as ops

    for name in ops.__all__:
        obj = getattr(ops, name)
        assert obj.__doc__, name
    params = inspect.signature(ops.AnonymizeOperator.__init__).parameters
    assert {"upstream", "config", "model_path", "model_sha256", "shard_index", "shard_count"} <= set(params)
    assert params["model_path"].annotation in ("str | None",)
    for cls in (ops.IntegrityOperator, ops.PoisoningOperator):
        assert set(cls.policy_fields) <= set(cls.template_fields), cls
    defaults = {cls: inspect.signature(cls.__init__).parameters["vault_conn_id"].default
                for cls in (ops.IntegrityOperator, ops.PackageOperator, ops.PackageConsumerOperator,
                            ops.VaultPreflightOperator)}
    assert set(defaults.values()) == {None}, defaults  # each resolves to the deployment's identity
    assert ops.IntegrityOperator(task_id="i", source="/d").vault_conn_id == "vault_sanitizer"
    assert ops.VaultPreflightOperator(task_id="v", role="trainer").vault_conn_id == "vault_trainer"
