"""An ``s3://`` source through the operator: credentials from Vault KV, s3fs over HTTP to a local
S3-compatible endpoint (moto server), mirrored and checked like a local directory, nothing leaked."""

from __future__ import annotations

import json
import uuid

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import DatasetError, run_integrity
from secure_data_testkit.airflow_env import register_dag, run_artifacts_text, xcom_return_value
from secure_data_testkit.s3 import S3Server


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


@pytest.fixture
def vault_s3_secret(openbao, monkeypatch, s3):
    """The S3 credentials stored in KV v2 where the sanitizer identity may read them."""
    import hvac

    from secure_data_testkit.vault_fixtures import bootstrap_test_vault, vault_connection_env

    boot = bootstrap_test_vault(openbao)
    for name, value in vault_connection_env(openbao, "sanitizer").items():
        monkeypatch.setenv(name, value)
    path = f"{boot.dataset_prefix}/s3-{uuid.uuid4().hex[:6]}"
    hvac.Client(url=openbao.url, token=openbao.root_token).secrets.kv.v2.create_or_update_secret(
        path=path, secret=s3.kv_secret, mount_point=boot.kv_mount)
    return path


def test_s3_source_with_vault_credentials_is_mirrored_checked_and_never_leaks(
        airflow_home, vault_s3_secret, s3, dataset, tmp_path, layout_factory, capfd):
    from airflow.sdk import DAG

    from secure_data.operators.integrity import IntegrityOperator

    bucket = f"raw-{uuid.uuid4().hex[:8]}"
    uploaded = s3.upload_directory(dataset, bucket, prefix="street/v1")
    client = s3.client()
    # Keys that are legal in S3 but must never become paths: traversal and an absolute-looking name.
    client.put_object(Bucket=bucket, Key="street/v1/images/train/../../../escape.jpg", Body=b"ESCAPE-BYTES")
    client.put_object(Bucket=bucket, Key="street/v1/labels/train/a//b.txt", Body=b"0 0.5 0.5 0.1 0.1\n")

    dag_id = f"integrity_s3_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None) as dag:
        IntegrityOperator(task_id="integrity", source=f"s3://{bucket}/street/v1", output_root=str(tmp_path / "out"),
                          storage_secret=vault_s3_secret, vault_conn_id="vault_sanitizer",
                          config={"workers": 2}, retries=0)
    register_dag(dag)
    run = dag.test()
    assert run.state == "success"
    value = xcom_return_value(airflow_home, dag_id, "integrity")
    manifest = read_manifest(value["manifest_path"], expected_digest=value["manifest_digest"])
    assert manifest.header["mirrored"] is True and manifest.header["source"] == f"s3://{bucket}/street/v1"

    # The same verdict, file by file, as reading the directory in place.
    local = read_manifest(run_integrity(dataset, layout_factory("local"), config=IntegrityConfig(workers=2))
                          .manifest_path).by_path()
    remote = manifest.by_path()
    for rel, record in local.items():
        assert remote[rel].to_dict() == record.to_dict(), rel
    extra = {rel: r for rel, r in remote.items() if rel not in local}
    assert extra and all(r.status == "quarantined" and r.reasons[0].code == "unsafe_path" for r in extra.values()), \
        {rel: r.to_dict() for rel, r in extra.items()}
    assert value["counts"]["files"] == uploaded + len(extra)  # nothing silently dropped
    assert value["counts"]["accepted"] + value["counts"]["quarantined"] == value["counts"]["files"]
    for path in (tmp_path / "out").rglob("*"):
        assert ".." not in path.relative_to(tmp_path / "out").parts
        if path.is_file():
            assert b"ESCAPE-BYTES" not in path.read_bytes()
    assert not (tmp_path / "escape.jpg").exists()

    # The credentials were used (the bucket was read) and appear nowhere.
    out = capfd.readouterr()
    assert f"Storage credentials read from Vault path {vault_s3_secret}" in out.out + out.err
    haystacks = [json.dumps(value), out.out + out.err, *run_artifacts_text(airflow_home, dag_id, tmp_path / "out")]
    for secret in (s3.access_key_id, s3.secret_access_key):
        assert not any(secret in h for h in haystacks)


def test_missing_bucket_is_a_clear_run_level_error(s3, layout_factory):
    from secure_data.integrity.run import run_integrity as run

    options = {"key": s3.access_key_id, "secret": s3.secret_access_key, "endpoint_url": s3.endpoint_url}
    with pytest.raises(DatasetError) as err:
        run(f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x", layout_factory(), config=IntegrityConfig(workers=1),
            storage_options=options)
    assert "no-such-bucket" in str(err.value) and s3.secret_access_key not in str(err.value)


def test_s3_without_s3fs_names_the_extra(monkeypatch):
    from secure_data.operators import integrity

    def missing(scheme):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr("fsspec.get_filesystem_class", missing)
    with pytest.raises(ValueError, match=r"secure-data\[s3\]"):
        integrity._check_fsspec_scheme("s3://bucket/prefix")


def test_concurrent_shards_mirror_an_s3_source_once(s3, dataset, layout_factory):
    from concurrent.futures import ThreadPoolExecutor

    from secure_data.integrity.shards import merge_integrity, run_integrity_shard

    bucket = f"raw-{uuid.uuid4().hex[:8]}"
    s3.upload_directory(dataset, bucket)
    options = {"key": s3.access_key_id, "secret": s3.secret_access_key, "endpoint_url": s3.endpoint_url}
    cfg = IntegrityConfig(workers=1)
    layout = layout_factory("sharded")
    uri = f"s3://{bucket}"
    with ThreadPoolExecutor(3) as pool:  # the mapped shard tasks of one run, at the same time
        results = list(pool.map(lambda i: run_integrity_shard(uri, layout, shard=i, shards=3, config=cfg,
                                                              storage_options=options), range(3)))
    partials = [p for p in layout.root.iterdir() if p.name.startswith(".source.") and p.is_dir()]
    assert (layout.root / "source" / "index.jsonl").exists() and not partials  # one complete mirror
    merged = merge_integrity(uri, layout, results, config=cfg, storage_options=options)
    whole = run_integrity(uri, layout_factory("whole"), config=cfg, storage_options=options)
    assert merged.manifest_digest == whole.manifest_digest
