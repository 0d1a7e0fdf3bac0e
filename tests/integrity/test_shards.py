"""Sharded integrity (for dynamic task mapping): the merged manifest is byte-identical to an unsharded run's."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import RunLayout
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import DatasetError, run_integrity
from secure_data.integrity.shards import merge_integrity, run_integrity_shard

CFG = IntegrityConfig(workers=2)


def _poison(dataset: Path) -> None:
    """Findings of every level: a bad image, a bad label (its sample goes too), an orphan label."""
    (dataset / "images" / "train" / "train_00001.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (dataset / "labels" / "train" / "train_00002.txt").write_text("0 0.5 0.5 0.1\n")
    (dataset / "labels" / "val" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")


@pytest.mark.parametrize("shards", [1, 3])
def test_merged_shards_equal_one_run_byte_for_byte(dataset, layout_factory, shards):
    _poison(dataset)
    whole = run_integrity(dataset, layout_factory("whole"), config=CFG)
    layout = layout_factory("sharded")
    results = [run_integrity_shard(dataset, layout, shard=i, shards=shards, config=CFG) for i in range(shards)]
    assert sum(r["files"] for r in results) == whole.counts["files"] - 1  # all but data.yaml, each exactly once
    if shards > 1:
        assert all(r["files"] > 0 for r in results)
    merged = merge_integrity(dataset, layout, reversed(results), config=CFG)  # any order
    assert merged.manifest_digest == whole.manifest_digest
    assert Path(merged.manifest_path).read_bytes() == Path(whole.manifest_path).read_bytes()
    assert merged.counts == whole.counts and merged.counts["quarantined"] >= 3
    quarantined = sorted(p.relative_to(layout.quarantine("integrity")).as_posix()
                         for p in layout.quarantine("integrity").rglob("*") if p.is_file())
    assert quarantined and quarantined == sorted(
        p.relative_to(layout_factory("whole").quarantine("integrity")).as_posix()
        for p in layout_factory("whole").quarantine("integrity").rglob("*") if p.is_file())


def test_an_image_and_its_label_are_checked_in_the_same_shard(dataset, layout_factory):
    layout = layout_factory()
    owners = {}
    for i in range(4):
        result = run_integrity_shard(dataset, layout, shard=i, shards=4, config=CFG)
        for line in Path(result["path"]).read_text().splitlines()[1:]:
            record = json.loads(line)["record"]
            owners.setdefault(record["sample"], set()).add(i)
    assert owners and all(len(shards) == 1 for sample, shards in owners.items() if sample)


def test_missing_shard_changed_shard_or_changed_dataset_is_refused(dataset, layout_factory):
    layout = layout_factory()
    results = [run_integrity_shard(dataset, layout, shard=i, shards=2, config=CFG) for i in range(2)]
    with pytest.raises(DatasetError, match="exactly once"):
        merge_integrity(dataset, layout, results[:1], config=CFG)
    with pytest.raises(DatasetError, match="another source or configuration"):
        merge_integrity(dataset, layout, results, config=IntegrityConfig(workers=2, max_pixels=1000))
    (dataset / "images" / "val" / "late.jpg").write_bytes((dataset / "images" / "val" / "val_00000.jpg").read_bytes())
    with pytest.raises(DatasetError, match="not checked"):
        merge_integrity(dataset, layout, results, config=CFG)
    (dataset / "images" / "val" / "late.jpg").unlink()
    shard_file = Path(results[0]["path"])
    shard_file.write_bytes(shard_file.read_bytes().replace(b'"accepted"', b'"accepted" '))
    from secure_data.dataset.manifest import IntegrityError

    with pytest.raises(IntegrityError, match="changed after shard 0"):
        merge_integrity(dataset, layout, results, config=CFG)
    with pytest.raises(ValueError, match="not in 0..1"):
        run_integrity_shard(dataset, layout, shard=2, shards=2, config=CFG)


def test_mapped_shard_tasks_and_merge_in_airflow(airflow_home, dataset, tmp_path):
    from airflow.sdk import DAG

    from secure_data.operators.integrity import IntegrityMergeOperator, IntegrityShardOperator
    from secure_data_testkit.airflow_env import register_dag, xcom_return_value

    _poison(dataset)
    dag_id = f"integrity_shards_{uuid.uuid4().hex[:8]}"
    common = {"source": str(dataset), "output_root": str(tmp_path / "out"), "config": {"workers": 1},
              "background_images": "quarantine"}
    with DAG(dag_id, schedule=None) as dag:
        shards = IntegrityShardOperator.partial(task_id="integrity_shard", shards=3, **common).expand(shard=[0, 1, 2])
        IntegrityMergeOperator(task_id="integrity", shard_results=shards.output, **common)
    register_dag(dag)
    run = dag.test()
    assert run.state == "success"
    value = xcom_return_value(airflow_home, dag_id, "integrity")
    manifest = read_manifest(value["manifest_path"], expected_digest=value["manifest_digest"])
    whole = run_integrity(dataset, RunLayout(tmp_path / "whole"),
                          config=IntegrityConfig(workers=1, background_images="quarantine"))
    assert value["manifest_digest"] == whole.manifest_digest  # the mapped run equals one unsharded run
    assert value["counts"] == whole.counts and value["counts"]["quarantined"] >= 3
    assert manifest.by_path()["images/train/train_00001.jpg"].status == "quarantined"
