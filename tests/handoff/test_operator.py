"""PackageOperator in a real Airflow run (dag.test, SQLite), then a scan for leaks.

The operator runs as the sanitizer identity against the real OpenBao; afterwards the
package, the task logs, the run folder, XCom, the Asset event and the captured output
are searched for the plaintext data key (raw, hex, base64) and for plaintext data.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from secure_data.dataset.layout import classify, walk_dataset
from secure_data.dataset.manifest import FileRecord, Reason, sha256_hex, write_manifest
from secure_data.dataset.stage import StageResult
from secure_data_testkit.airflow_env import register_dag
from secure_data_testkit.vault_fixtures import vault_connection_env

QUARANTINED = "images/val/val_00001.jpg"


def _anonymize_stage(dataset: Path, out: Path) -> StageResult:
    """The anonymization stage's output contract: a manifest over data_root, one record quarantined."""
    records = []
    for entry in walk_dataset(dataset):
        data = (dataset / entry.relpath).read_bytes()
        kind, split = classify(entry.relpath)
        record = FileRecord(path=entry.relpath, sha256=sha256_hex(data), size=len(data), kind=kind, split=split)
        if entry.relpath == QUARANTINED:
            record = record.quarantined(Reason("residual_detection", "face still visible", "anonymize"))
        records.append(record)
    manifest_path = out / "anonymize" / "manifest.jsonl"
    digest = write_manifest(manifest_path, {"stage": "anonymize"}, records)
    return StageResult(stage="anonymize", manifest_path=str(manifest_path), manifest_digest=digest,
                       counts={"files": len(records)}, data_root=str(dataset),
                       figures={"audit_digest": "sha256:" + "a" * 64})


def _key_forms(key: bytes) -> list[bytes]:
    return [key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key),
            repr(key)[2:-1].encode()]


def _plaintext_probes(dataset: Path) -> dict[str, bytes]:
    probes = {}
    for path in dataset.rglob("*"):
        if path.is_file() and path.stat().st_size >= 16:
            data = path.read_bytes()
            mid = len(data) // 2
            probes[path.relative_to(dataset).as_posix()] = data[mid - 8:mid + 8] if len(data) > 64 else data
    return probes



@pytest.fixture
def sanitizer_conn(openbao, vault, monkeypatch):
    for name, value in {**vault_connection_env(openbao, "sanitizer"),
                        **vault_connection_env(openbao, "trainer")}.items():
        monkeypatch.setenv(name, value)


def test_operator_publishes_a_package_and_leaks_nothing(airflow_home, sanitizer_conn, small_dataset, tmp_path,
                                                        trainer_ks, capfd):
    from airflow.sdk import DAG, task

    from secure_data.assets import PACKAGE_ASSET
    from secure_data.handoff.consumer import open_package
    from secure_data.handoff.package import package_path, read_header
    from secure_data.operators.handoff import PackageOperator

    stage = _anonymize_stage(small_dataset, tmp_path / "run")
    integrity = StageResult(stage="integrity", manifest_path="m", manifest_digest="sha256:" + "1" * 64,
                            counts={}, data_root=str(small_dataset))
    dag_id = f"handoff_op_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None, render_template_as_native_obj=True) as dag:
        @task
        def anonymized() -> dict:
            return stage.to_xcom()

        PackageOperator(task_id="handoff", upstream=anonymized(), upstream_stages=[integrity.to_xcom()],
                        packages_root=str(tmp_path / "packages"), output_root=str(tmp_path / "out"),
                        vault_conn_id="vault_sanitizer")
    register_dag(dag)
    run = dag.test()
    assert run.state == "success"

    db = sqlite3.connect(airflow_home / "airflow.db")
    (xcom_raw,) = db.execute("select value from xcom where dag_id=? and task_id='handoff' and key='return_value'",
                             (dag_id,)).fetchone()
    result = StageResult.from_xcom(json.loads(xcom_raw))
    extra = result.extra
    root = package_path(extra["package_uri"])
    assert root.parent == tmp_path / "packages" and (root / "header.json").exists()
    assert result.stage == "handoff" and result.manifest_digest == extra["manifest_digest"]
    assert extra["upstream"] == {"anonymize": stage.manifest_digest, "integrity": integrity.manifest_digest,
                                 "anonymize.audit_digest": "sha256:" + "a" * 64}
    assert result.counts["files"] == 24  # 25 files in the dataset, one quarantined and left out

    # The Asset event: non-secret metadata only, pointing at the package.
    rows = db.execute(
        "select e.extra from asset_event e join asset a on a.id = e.asset_id where a.uri = ? "
        "and e.source_dag_id = ?", (PACKAGE_ASSET.uri, dag_id)).fetchall()
    assert len(rows) == 1
    event = json.loads(rows[0][0])
    assert set(event) == {"package_uri", "package_id", "name", "manifest_digest", "content_digest", "counts",
                          "key_name", "key_version", "provenance_uri", "provenance_digest", "report_url"}
    assert event["package_id"] == root.name and event["key_name"] == "secure-data-datakey"
    # A link a browser can open (the run's report on the Airflow origin), beside the file:// URI for machines.
    assert f"/secure-data/reports/{dag_id}/" in event["report_url"] and event["report_url"].endswith("/")

    # The trainer gets back exactly the accepted files.
    with open_package(event["package_uri"], trainer_ks, expected_package_id=event["package_id"],
                      expected_manifest_digest=event["manifest_digest"]) as pkg:
        got = {p.relative_to(pkg.path).as_posix() for p in pkg.path.rglob("*") if p.is_file()}
        assert QUARANTINED not in got and len(got) == 24
        for rel in got:
            assert (pkg.path / rel).read_bytes() == (small_dataset / rel).read_bytes()

    # --- the leak scan -----------------------------------------------------------------------------------
    key = trainer_ks.unwrap(read_header(root).data_key.wrapped)
    needles = {f"data key ({i})": form for i, form in enumerate(_key_forms(key))}
    needles.update({f"plaintext of {rel}": probe for rel, probe in _plaintext_probes(small_dataset).items()})
    haystacks: dict[str, bytes] = {}
    for base in (root, tmp_path / "out", airflow_home / "logs"):
        for path in Path(base).rglob("*"):
            if path.is_file():
                haystacks[str(path)] = path.read_bytes()
    rows = [("xcom", v) for (v,) in db.execute("select value from xcom where dag_id=?", (dag_id,))]
    rows += [("asset_event", v) for (v,) in db.execute("select extra from asset_event")]
    rows += [("rendered fields", v) for (v,) in db.execute(
        "select rendered_fields from rendered_task_instance_fields where dag_id=?", (dag_id,))]
    assert len(rows) >= 4
    for table, value in rows:
        haystacks.setdefault(table, b"")
        haystacks[table] += value if isinstance(value, bytes) else str(value).encode()
    captured = capfd.readouterr()
    haystacks["task output"] = (captured.out + captured.err).encode()
    # Controls: the scan does see the package header and the task's own log lines.
    assert any(read_header(root).data_key.wrapped.encode() in hay for hay in haystacks.values())
    assert f"Published package {root.name}".encode() in haystacks["task output"]
    leaks = [(what, where) for what, needle in needles.items() for where, hay in haystacks.items() if needle in hay]
    assert leaks == []


def test_operator_fails_clearly_when_the_input_was_modified(airflow_home, sanitizer_conn, small_dataset, tmp_path):
    from airflow.sdk import DAG, task

    from secure_data.operators.handoff import PackageOperator

    stage = _anonymize_stage(small_dataset, tmp_path / "run")
    (small_dataset / "labels/train/train_00002.txt").write_text("0 0.5 0.5 0.9 0.9\n")  # after the manifest
    dag_id = f"handoff_tamper_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None, render_template_as_native_obj=True) as dag:
        @task
        def anonymized() -> dict:
            return stage.to_xcom()

        PackageOperator(task_id="handoff", upstream=anonymized(), packages_root=str(tmp_path / "packages"),
                        output_root=str(tmp_path / "out"), vault_conn_id="vault_sanitizer", retries=0)
    register_dag(dag)
    run = dag.test()
    assert run.state == "failed"
    assert not any((tmp_path / "packages").glob("handoff*")) and not any((tmp_path / "packages").glob("sanitized*"))
    db = sqlite3.connect(airflow_home / "airflow.db")
    assert db.execute("select count(*) from asset_event where source_dag_id=?", (dag_id,)).fetchone() == (0,)


def test_each_dataset_announces_on_its_own_asset_by_default():
    # issue 16: one global default Asset made every copied sanitization DAG trigger every training DAG
    from secure_data.assets import PACKAGE_ASSET, package_asset
    from secure_data.operators.handoff import PackageOperator

    street = PackageOperator(task_id="street", upstream={}, package_name="street_scenes")
    assert [a.uri for a in street.outlets] == ["secure-data://packages/street_scenes"]
    assert street.outlets == [package_asset("street_scenes")] != [PACKAGE_ASSET]
    assert PackageOperator(task_id="default", upstream={}).outlets == [PACKAGE_ASSET]  # name "sanitized"
    explicit = PackageOperator(task_id="explicit", upstream={}, package_name="{{ params.name }}",
                               outlets=[package_asset("faces")])
    assert [a.uri for a in explicit.outlets] == ["secure-data://packages/faces"]
    with pytest.raises(ValueError, match="templated"):
        PackageOperator(task_id="templated", upstream={}, package_name="{{ params.name }}")
