"""AnonymizeOperator mapped over shards + AnonymizeMergeOperator in a real Airflow run (dag.test, SQLite)."""

from __future__ import annotations

import json
import sqlite3
import uuid

from secure_data.dataset.manifest import read_manifest, verified_read
from secure_data.dataset.stage import RunLayout, StageResult
from secure_data_testkit.airflow_env import register_dag
from secure_data_testkit.datasets import make_yolo_dataset


def test_mapped_shards_and_merge_in_airflow(airflow_home, tmp_path, demo_model, make_upstream):
    from airflow.sdk import DAG, Param, task

    from secure_data.operators.anonymize import AnonymizeMergeOperator, AnonymizeOperator

    root = make_yolo_dataset(tmp_path / "ds", n_train=10, n_val=4, width=320, height=240, seed=8)
    upstream = make_upstream(root, RunLayout(tmp_path / "upstream-run"))
    model_path, model_sha = demo_model
    out = tmp_path / "out"
    dag_id = f"anonymize_op_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None, render_template_as_native_obj=True,
             params={"classes": Param(["face", "plate"], type="array"), "mode": Param("pixelate")}) as dag:
        @task
        def integrity() -> dict:
            return upstream.to_xcom()

        @task
        def plan(up: dict) -> list[dict[str, int]]:
            return [{"shard_index": i, "shard_count": 2} for i in range(2)]

        up = integrity()
        config = {"model_path": str(model_path), "model_sha256": model_sha, "classes": "{{ params.classes }}",
                  "imgsz": 160, "batch_size": 4, "device": "cpu", "box_padding": 0.15, "verify_confidence": 0.1}
        shards = AnonymizeOperator.partial(task_id="anonymize", upstream=up, config=config, mode="{{ params.mode }}",
                                           output_root=str(out)).expand_kwargs(plan(up))
        AnonymizeMergeOperator(task_id="anonymize_merge", upstream=up, shard_results=shards.output, config=config,
                               mode="{{ params.mode }}", output_root=str(out))
    register_dag(dag)
    run = dag.test()
    assert run.state == "success"

    db = sqlite3.connect(airflow_home / "airflow.db")
    shard_rows = db.execute("select value from xcom where dag_id=? and task_id='anonymize' and key='return_value'",
                            (dag_id,)).fetchall()
    shard_results = [json.loads(v) for (v,) in shard_rows]
    assert sorted(r["shard_index"] for r in shard_results) == [0, 1]
    assert sum(r["counts"]["images"] for r in shard_results) == 14
    (raw,) = db.execute("select value from xcom where dag_id=? and task_id='anonymize_merge' and key='return_value'",
                        (dag_id,)).fetchone()
    merged = StageResult.from_xcom(json.loads(raw))
    assert merged.stage == "anonymize" and merged.data_root.startswith(str(out))
    manifest = read_manifest(merged.manifest_path, expected_digest=merged.manifest_digest)
    assert len(manifest.records) == len(read_manifest(upstream.manifest_path).records)
    for rec in manifest.records:
        if rec.accepted:
            verified_read(merged.data_root, rec)
    params = json.loads(open(merged.extra["audit_path"]).readline())["params"]
    assert params["mode"] == "pixelate" and params["padding"] == 0.15 and params["classes"] == ["face", "plate"]
    assert merged.extra["anonymized"] + merged.extra["quarantined"] == 14
    assert "residual_detections" in merged.extra and merged.extra["boxes_per_class"]
