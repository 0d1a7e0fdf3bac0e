"""Packages on object storage: published header-last to a local S3-compatible endpoint (moto server over
HTTP, through s3fs), opened by the trainer from there, refused when the bucket was tampered with."""

from __future__ import annotations

import uuid

import pytest

from secure_data.handoff import remote
from secure_data.handoff.consumer import open_package
from secure_data.handoff.from_stage import derived_package_id, package_stage
from secure_data.handoff.package import PackageError, PackageFormatError, PackageIntegrityError
from secure_data_testkit.datasets import stage_result_for
from secure_data_testkit.s3 import S3Server


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(s3):
    name = f"packages-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=name)
    return name


def _options(s3) -> dict[str, str]:
    return {"key": s3.access_key_id, "secret": s3.secret_access_key, "endpoint_url": s3.endpoint_url}


def _keys(s3, bucket: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


@pytest.fixture
def published(s3, bucket, small_dataset, sanitizer_ks, tmp_path):
    stage = stage_result_for(small_dataset, tmp_path)
    info = package_stage(stage, f"s3://{bucket}/sanitized", sanitizer_ks, name="small",
                         storage_options=_options(s3), staging_dir=tmp_path)
    return info, stage


def test_round_trip_through_s3_is_byte_identical_and_leaves_no_local_copy(published, s3, bucket, small_dataset,
                                                                          trainer_ks, tmp_path):
    info, _ = published
    assert info.uri == f"s3://{bucket}/sanitized/{info.package_id}"
    keys = _keys(s3, bucket)
    prefix = f"sanitized/{info.package_id}/"
    assert f"{prefix}header.json" in keys and f"{prefix}manifest.jsonl" in keys
    assert len([k for k in keys if k.startswith(prefix + "data/")]) == info.counts["files"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("secure-data-package-")]  # staging removed
    for key in keys:  # ciphertext only in the bucket
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert (small_dataset / "data.yaml").read_bytes() not in body

    with open_package(info.uri, trainer_ks, expected_package_id=info.package_id,
                      expected_manifest_digest=info.manifest_digest, storage_options=_options(s3)) as pkg:
        assert pkg.info.uri == info.uri
        files = {p.relative_to(pkg.path).as_posix(): p.read_bytes() for p in pkg.path.rglob("*") if p.is_file()}
        assert files == {p.relative_to(small_dataset).as_posix(): p.read_bytes()
                         for p in small_dataset.rglob("*") if p.is_file()}
        scratch = pkg.scratch
    assert not scratch.exists()


def test_retry_reuses_the_published_package_and_never_overwrites(s3, bucket, small_dataset, sanitizer_ks, tmp_path):
    stage = stage_result_for(small_dataset, tmp_path)
    pid = derived_package_id("sanitized", "dag", "run-1", stage.manifest_digest)
    root = f"s3://{bucket}/sanitized"
    first = package_stage(stage, root, sanitizer_ks, name="small", package_id=pid, storage_options=_options(s3))
    stamp = s3.client().head_object(Bucket=bucket, Key=f"sanitized/{pid}/header.json")["ETag"]
    again = package_stage(stage, root, sanitizer_ks, name="small", package_id=pid, storage_options=_options(s3))
    assert again == first
    assert s3.client().head_object(Bucket=bucket, Key=f"sanitized/{pid}/header.json")["ETag"] == stamp
    other = stage_result_for(small_dataset, tmp_path, quarantine={"images/train/train_00000.jpg"})
    with pytest.raises(PackageError, match="different upstream"):
        package_stage(other, root, sanitizer_ks, name="small", package_id=pid, storage_options=_options(s3))
    (tmp_path / pid).mkdir()
    with pytest.raises(remote.PackageExistsError, match="immutable"):  # checked before any upload
        remote.publish_package(tmp_path / pid, root, _options(s3))


def test_an_upload_killed_before_the_header_is_absent_then_completed_by_the_retry(
        s3, bucket, small_dataset, sanitizer_ks, trainer_ks, tmp_path, monkeypatch):
    stage = stage_result_for(small_dataset, tmp_path)
    pid = derived_package_id("sanitized", "dag", "run-killed", stage.manifest_digest)
    root = f"s3://{bucket}/sanitized"
    real_fs = remote._fs
    with monkeypatch.context() as patch:  # undone on exit (s3fs caches its filesystem objects)

        def dying_fs(uri, options):
            fs, path = real_fs(uri, options)
            original = fs.put_file

            def put_file(lpath, rpath, *args, **kwargs):
                if rpath.endswith("/header.json"):
                    raise ConnectionError("worker killed before the commit point")
                return original(lpath, rpath, *args, **kwargs)

            patch.setattr(fs, "put_file", put_file)
            return fs, path

        patch.setattr(remote, "_fs", dying_fs)
        with pytest.raises(ConnectionError):
            package_stage(stage, root, sanitizer_ks, name="small", package_id=pid, storage_options=_options(s3))
    keys = _keys(s3, bucket)
    assert any(k.startswith(f"sanitized/{pid}/data/") for k in keys)  # the data went up...
    assert f"sanitized/{pid}/header.json" not in keys  # ...but the package was never committed
    with pytest.raises(PackageFormatError, match="not published completely"):
        with open_package(f"{root}/{pid}", trainer_ks, storage_options=_options(s3)):
            pass

    info = package_stage(stage, root, sanitizer_ks, name="small", package_id=pid, storage_options=_options(s3))
    with open_package(info.uri, trainer_ks, storage_options=_options(s3)) as pkg:
        assert (pkg.path / "data.yaml").read_bytes() == (small_dataset / "data.yaml").read_bytes()


@pytest.mark.parametrize("attack", ["flip_byte", "add_object", "escape_key", "remove_object"])
def test_tampering_in_the_bucket_is_refused_naming_the_object(published, s3, bucket, trainer_ks, attack):
    info, _ = published
    client, prefix = s3.client(), f"sanitized/{info.package_id}/"
    victim = next(k for k in _keys(s3, bucket) if k.startswith(prefix + "data/images/"))
    if attack == "flip_byte":
        body = bytearray(client.get_object(Bucket=bucket, Key=victim)["Body"].read())
        body[100] ^= 1
        client.put_object(Bucket=bucket, Key=victim, Body=bytes(body))
        expected = victim.removeprefix(prefix)
    elif attack == "add_object":
        client.put_object(Bucket=bucket, Key=prefix + "data/images/train/extra.jpg.enc", Body=b"x" * 64)
        expected = "data/images/train/extra.jpg.enc"
    elif attack == "escape_key":
        client.put_object(Bucket=bucket, Key=prefix + "data/../../../escape.txt", Body=b"ESCAPE")
        expected = "escape.txt"
    else:
        client.delete_object(Bucket=bucket, Key=victim)
        expected = victim.removeprefix(prefix)
    with pytest.raises(PackageIntegrityError) as err:
        with open_package(info.uri, trainer_ks, storage_options=_options(s3)):
            pass
    assert expected in str(err.value)


def test_sanitizer_cannot_open_its_own_package_from_s3(published, s3, sanitizer_ks):
    info, _ = published
    with pytest.raises(PackageError, match="cannot unwrap"):
        with open_package(info.uri, sanitizer_ks, storage_options=_options(s3)):
            pass


def test_operators_publish_to_and_consume_from_s3_with_credentials_from_vault(
        airflow_home, openbao, vault, root_client, s3, bucket, small_dataset, tmp_path, monkeypatch, capfd):
    import json

    from airflow.sdk import DAG, task

    from secure_data.operators.handoff import PackageConsumerOperator, PackageOperator
    from secure_data_testkit.airflow_env import register_dag, run_artifacts_text, xcom_return_value
    from secure_data_testkit.vault_fixtures import vault_connection_env

    for name, value in {**vault_connection_env(openbao, "sanitizer"),
                        **vault_connection_env(openbao, "trainer")}.items():
        monkeypatch.setenv(name, value)
    # Each identity reads the bucket credentials from its own KV prefix (the policies allow nothing else).
    sanitizer_path, trainer_path = f"{vault.dataset_prefix}/packages-s3", f"{vault.training_prefix}/packages-s3"
    for path in (sanitizer_path, trainer_path):
        root_client.secrets.kv.v2.create_or_update_secret(path=path, secret=s3.kv_secret, mount_point=vault.kv_mount)
    stage = stage_result_for(small_dataset, tmp_path / "run")
    seen = tmp_path / "trained_on.json"

    def train(package, out):
        files = sorted(p.relative_to(package.path).as_posix() for p in package.path.rglob("*") if p.is_file())
        identical = all((package.path / f).read_bytes() == (small_dataset / f).read_bytes() for f in files)
        with open(out, "w") as fh:
            json.dump({"files": len(files), "identical": identical, "package_id": package.package_id}, fh)
        return len(files)

    dag_id = f"handoff_s3_{uuid.uuid4().hex[:8]}"
    with DAG(dag_id, schedule=None, render_template_as_native_obj=True) as dag:
        @task
        def anonymized() -> dict:
            return stage.to_xcom()

        handoff = PackageOperator(task_id="handoff", upstream=anonymized(), packages_root=f"s3://{bucket}/sanitized",
                                  storage_secret=sanitizer_path, output_root=str(tmp_path / "out"),
                                  vault_conn_id="vault_sanitizer", retries=0)
        consume = PackageConsumerOperator(
            task_id="consume", python_callable=train, op_kwargs={"out": str(seen)},
            package_uri="{{ ti.xcom_pull(task_ids='handoff')['extra']['package_uri'] }}",
            storage_secret=trainer_path, vault_conn_id="vault_trainer", retries=0)
        handoff >> consume
    register_dag(dag)
    run = dag.test()
    assert run.state == "success"
    extra = xcom_return_value(airflow_home, dag_id, "handoff")["extra"]
    assert extra["package_uri"] == f"s3://{bucket}/sanitized/{extra['package_id']}"
    trained = json.loads(seen.read_text())
    assert trained == {"files": len(list(p for p in small_dataset.rglob("*") if p.is_file())), "identical": True,
                       "package_id": extra["package_id"]}
    assert xcom_return_value(airflow_home, dag_id, "consume")["result"] == trained["files"]
    out = capfd.readouterr()
    assert f"Storage credentials read from Vault path {trainer_path}" in out.out + out.err
    haystacks = [out.out + out.err, *run_artifacts_text(airflow_home, dag_id, tmp_path / "out")]
    for secret in (s3.access_key_id, s3.secret_access_key):
        assert not any(secret in h for h in haystacks)
