"""The training side trusts only what its own deployment configuration names.

Regressions of issue 13: the training DAG's ``vault_conn_id`` (its trust anchor) was a trigger param;
a package's data.yaml could name a list file (``train: list.txt``) whose absolute paths Ultralytics
would read on the trainer host; a package made under any (or no) deployment policy was trained on.
"""

from __future__ import annotations

import pytest

from secure_data.handoff.consumer import PackagePolicyError, open_package
from secure_data.handoff.package import PackageFormatError, build_package, sources_from_directory
from secure_data_testkit.airflow_env import REPO_ROOT

ALLOWED = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def _package(tmp_path, dataset, sanitizer, policy=ALLOWED):
    upstream = {"anonymize": "sha256:" + "0" * 64, **({"policy": policy} if policy else {})}
    return build_package(tmp_path / "packages", sources_from_directory(dataset), sanitizer, name="p",
                         upstream=upstream)


def test_package_under_another_policy_is_refused_before_the_key_is_unwrapped(identities, small_dataset,
                                                                               tmp_path):
    info = _package(tmp_path, small_dataset, identities["sanitizer"], policy=OTHER)
    with pytest.raises(PackagePolicyError) as err:
        with open_package(info.uri, identities["trainer"], allowed_policy_digests={ALLOWED}):
            pass
    assert OTHER in str(err.value) and "not on this trainer's allow-list" in str(err.value)
    assert not list((tmp_path / "packages").glob("*/scratch*"))


def test_package_without_a_policy_digest_is_refused(identities, small_dataset, tmp_path):
    info = _package(tmp_path, small_dataset, identities["sanitizer"], policy=None)
    with pytest.raises(PackagePolicyError, match="records no deployment policy digest"):
        with open_package(info.uri, identities["trainer"], allowed_policy_digests={ALLOWED}):
            pass


def test_package_under_an_allowed_policy_opens(identities, small_dataset, tmp_path):
    info = _package(tmp_path, small_dataset, identities["sanitizer"])
    with open_package(info.uri, identities["trainer"], allowed_policy_digests={ALLOWED}) as pkg:
        assert pkg.data_yaml is not None and pkg.package_id == info.package_id


def test_list_file_split_is_refused(identities, small_dataset, tmp_path):
    outside = tmp_path / "trainer-host" / "secret.jpg"
    outside.parent.mkdir()
    outside.write_bytes((next((small_dataset / "images" / "train").iterdir())).read_bytes())
    (small_dataset / "list.txt").write_text(f"{outside}\n")
    yaml_text = (small_dataset / "data.yaml").read_text()
    (small_dataset / "data.yaml").write_text(
        "\n".join("train: list.txt" if line.startswith("train:") else line for line in yaml_text.splitlines()) + "\n")
    info = _package(tmp_path, small_dataset, identities["sanitizer"])
    with pytest.raises(PackageFormatError, match="list-file splits are refused"):
        with open_package(info.uri, identities["trainer"], allowed_policy_digests={ALLOWED}):
            pass


def test_training_dag_takes_no_trust_anchor_from_params(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SECURE_DATA_TRAINER_VAULT_CONN_ID", "vault_trainer_prod")
    monkeypatch.setenv("SECURE_DATA_SIGNING_KEY", "prod-signing")
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "secure_training.py"))
    assert bag.import_errors == {}
    dag = bag.dags["secure_training"]
    assert not {"vault_conn_id", "signing_key", "allowed_policy_digests"} & set(dag.params.keys())
    train = dag.get_task("train")
    assert (train.vault_conn_id, train.signing_key, train.allowed_policy_digests) == (
        "vault_trainer_prod", "prod-signing", "deployment")


def test_trainer_allow_list_comes_from_its_deployment(monkeypatch, tmp_path):
    from secure_data.policy import load_policy
    from secure_data.policy.anchors import trainer_policy_digests

    monkeypatch.setenv("SECURE_DATA_MODEL_PATH", str(tmp_path / "m.pt"))
    monkeypatch.setenv("SECURE_DATA_MODEL_SHA256", "c" * 64)
    monkeypatch.delenv("SECURE_DATA_POLICY_FILE", raising=False)
    monkeypatch.delenv("SECURE_DATA_TRAINER_POLICY_DIGESTS", raising=False)
    assert trainer_policy_digests() == {load_policy().digest}
    monkeypatch.setenv("SECURE_DATA_TRAINER_POLICY_DIGESTS", f"{ALLOWED}, {OTHER}")
    assert trainer_policy_digests() == {ALLOWED, OTHER}


def test_effective_policy_is_signed_into_the_package(identities, small_dataset, tmp_path):
    import json

    from secure_data.handoff.from_stage import POLICY_FILE, package_stage
    from secure_data.policy.model import digest_of
    from secure_data_testkit.datasets import stage_result_for

    effective = {"policy_digest": ALLOWED, "conf": 0.2, "classes": ["face", "plate"]}
    stage = stage_result_for(small_dataset, tmp_path / "run")
    info = package_stage(stage, tmp_path / "packages", identities["sanitizer"], name="p", policy=effective)
    assert info.upstream["policy"] == ALLOWED and info.upstream["policy.effective"] == digest_of(effective)
    with open_package(info.uri, identities["trainer"], allowed_policy_digests={ALLOWED}) as pkg:
        assert json.loads((pkg.path / POLICY_FILE).read_text()) == effective
    with pytest.raises(PackagePolicyError):
        with open_package(info.uri, identities["trainer"], allowed_policy_digests={OTHER}):
            pass
