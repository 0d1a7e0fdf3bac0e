"""The per-run provenance statement of a real run of the sanitization DAG (conftest ``chain``: dag.test, real OpenBao).

The statement is checked three ways: its DSSE signature with our verifier and with an independent DSSE
implementation (securesystemslib, the one TUF/in-toto use), against the public key the trainer exports;
every digest it names against the files of the run folder and the published package; and its facts
(source digest, counts, quarantine reasons, key versions) against the stage manifests themselves.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import StageResult


def read_manifest_upstream(package_root: Path) -> dict:
    from secure_data.handoff.package import PackageManifest

    return dict(PackageManifest.parse((package_root / "manifest.jsonl").read_bytes()).upstream)


def _local(uri: str) -> Path:
    from secure_data.handoff.package import package_path

    return package_path(uri)


@pytest.fixture(scope="module")
def run(chain, airflow_home):
    """The real sanitization DAG's run (conftest ``chain``): stage results by stage name."""
    assert chain.dag_run.state == "success"
    stages = {name: StageResult.from_xcom(chain.xcom[task]) for name, task in
              (("integrity", "integrity"), ("poisoning", "poisoning"), ("anonymize", "anonymize_merge"),
               ("handoff", "handoff"))}
    return chain, stages, airflow_home


def test_provenance_is_linked_from_the_asset_event_by_uri_and_digest_only(run):
    from secure_data.assets import PACKAGE_ASSET

    chain, stages, home = run
    extra = stages["handoff"].extra
    db = sqlite3.connect(home / "airflow.db")
    (raw,) = db.execute("select e.extra from asset_event e join asset a on a.id = e.asset_id where a.uri = ? "
                        "and e.source_dag_id = ? and e.source_run_id = ?",
                        (PACKAGE_ASSET.uri, chain.dag_id, chain.dag_run.run_id)).fetchone()
    event = json.loads(raw)
    assert event["provenance_uri"] == extra["provenance_uri"]
    assert event["provenance_digest"] == extra["provenance_digest"]
    assert not [k for k in event if k.startswith("provenance") and k not in ("provenance_uri", "provenance_digest")]
    path = _local(event["provenance_uri"])
    assert path.name == "provenance.intoto.jsonl"
    assert path.parent == Path(stages["integrity"].manifest_path).parent.parent  # the run folder


def test_signature_verifies_with_the_exported_key_and_with_an_independent_dsse_verifier(run, public_key_pem):
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    from secure_data.handoff.provenance import verify_provenance

    chain, stages, _ = run
    extra = stages["handoff"].extra
    path = _local(extra["provenance_uri"])
    pem = public_key_pem.read_bytes()
    (statement,) = verify_provenance(path, pem, expected_digest=extra["provenance_digest"])
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"

    envelope = Envelope.from_dict(json.loads(path.read_text()))
    crypto_key = serialization.load_pem_public_key(pem)
    key = SSlibKey.from_crypto(crypto_key, keyid=envelope.signatures[next(iter(envelope.signatures))].keyid)
    assert key.keyid in envelope.verify([key], 1)
    assert json.loads(envelope.pae().split(b" ", 4)[4]) == statement  # same statement, read independently

    # An edited payload (say, a lower quarantine count) no longer verifies, with either verifier.
    line = json.loads(path.read_text())
    forged = json.loads(base64.b64decode(line["payload"]))
    forged["subject"][0]["digest"]["sha256"] = "0" * 64
    line["payload"] = base64.b64encode(json.dumps(forged).encode()).decode()
    bad = path.with_name("forged.intoto.jsonl")
    bad.write_text(json.dumps(line) + "\n")
    from secure_data.handoff.provenance import ProvenanceError

    with pytest.raises(ProvenanceError):
        verify_provenance(bad, pem)
    with pytest.raises(Exception, match="(?i)threshold|verif"):
        Envelope.from_dict(line).verify([key], 1)


def test_statement_digests_match_the_run_manifests_and_the_package(run, public_key_pem, tmp_path):
    import shutil

    from secure_data.handoff.package import package_path, read_header
    from secure_data.handoff.provenance import ProvenanceError, check_run_digests, verify_provenance

    chain, stages, _ = run
    extra = stages["handoff"].extra
    path = _local(extra["provenance_uri"])
    (statement,) = verify_provenance(path, public_key_pem.read_bytes())
    run_root = path.parent
    checked = check_run_digests(statement, run_root)
    assert {"integrity/manifest.jsonl", "poisoning/manifest.jsonl", "poisoning/findings.jsonl",
            "anonymize/manifest.jsonl", "anonymize/audit.jsonl"} <= set(checked)

    predicate = statement["predicate"]
    integrity = stages["integrity"]
    source = next(d for d in predicate["buildDefinition"]["resolvedDependencies"] if d["name"] == "source")
    assert "sha256:" + source["digest"]["sha256"] == integrity.manifest_digest
    for item in predicate["runDetails"]["byproducts"]:
        if item["name"].endswith("/manifest.jsonl"):
            stage = stages[item["annotations"]["stage"]]
            manifest = read_manifest(stage.manifest_path, expected_digest="sha256:" + item["digest"]["sha256"])
            assert item["annotations"]["counts"] == manifest.counts()
    reasons = next(i for i in predicate["runDetails"]["byproducts"]
                   if i["name"] == "integrity/manifest.jsonl")["annotations"]["quarantine_reasons"]
    assert reasons.get("not_an_image") == 1, reasons
    counts = next(i for i in predicate["runDetails"]["byproducts"]
                  if i["name"] == "integrity/manifest.jsonl")["annotations"]["counts"]
    assert counts["accepted"] + counts["quarantined"] == counts["files"]

    # Subject: the package as published, and its model_signing signature.
    root = package_path(extra["package_uri"])
    subject = {s["name"]: s for s in statement["subject"]}
    assert "sha256:" + subject[root.name]["digest"]["sha256"] == read_header(root).manifest_digest
    import hashlib

    assert subject[f"{root.name}/model.sig"]["digest"]["sha256"] == hashlib.sha256(
        (root / "model.sig").read_bytes()).hexdigest()
    keys = predicate["buildDefinition"]["internalParameters"]["keys"]
    assert keys["data_key"] == {"name": "secure-data-datakey", "version": read_header(root).data_key.key_version}
    assert keys["model_signing"]["key_name"] == "secure-data-attestation" and keys["model_signing"]["key_version"] >= 1
    assert keys["manifest"]["key_version"] >= 1
    internal = predicate["buildDefinition"]["internalParameters"]
    assert set(internal["stage_params"]) == {"integrity", "poisoning", "anonymize"}
    # The effective policy: the deployment policy's digest the run was checked against, as signed into the package.
    assert internal["policy"]["policy"] == chain.xcom["policy"]["policy_digest"]
    assert internal["policy"]["policy.effective"] == read_manifest_upstream(root)["policy.effective"]
    # Every model file by its pinned SHA-256, as the anonymization manifest recorded them.
    anonymize = read_manifest(stages["anonymize"].manifest_path, expected_digest=stages["anonymize"].manifest_digest)
    models = {d["name"].removeprefix("model:"): d["digest"]["sha256"]
              for d in predicate["buildDefinition"]["resolvedDependencies"] if d["name"].startswith("model:")}
    assert models == dict(anonymize.header["models"]) and models

    # One changed byte in a run manifest after the fact: the statement no longer matches the run.
    copy = tmp_path / "run"
    shutil.copytree(run_root, copy)
    victim = copy / "poisoning" / "manifest.jsonl"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(ProvenanceError, match="poisoning/manifest.jsonl"):
        check_run_digests(statement, copy)


def test_cli_checks_signature_and_run_digests(run, public_key_pem):
    chain, stages, _ = run
    extra = stages["handoff"].extra
    path = _local(extra["provenance_uri"])
    cmd = [sys.executable, "-m", "secure_data.handoff.provenance", "verify", str(path), "--public-key",
           str(public_key_pem), "--run-dir", str(path.parent), "--digest", extra["provenance_digest"]]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                            env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "plugins"), "PATH": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification succeeded" in result.stdout and "re-hashed" in result.stdout


def test_no_secret_in_the_statement(run, vault):
    chain, stages, _ = run
    text = _local(stages["handoff"].extra["provenance_uri"]).read_text()
    statement = json.loads(base64.b64decode(json.loads(text)["payload"]))
    blob = json.dumps(statement)
    for role in vault.roles:
        assert role.secret_id not in blob and role.role_id not in blob
    assert "wrapped" not in blob and "vault:v" not in blob  # not even the wrapped data key


def test_the_runs_package_verifies_with_the_model_signing_cli(run, public_key_pem):
    """The package the DAG's hand-off published (not one built by a test) carries a valid model.sig."""
    from secure_data.handoff.package import package_path

    _, stages, _ = run
    root = package_path(stages["handoff"].extra["package_uri"])
    model_signing = Path(sys.executable).with_name("model_signing")
    result = subprocess.run([str(model_signing), "verify", "key", str(root), "--signature", str(root / "model.sig"),
                             "--public_key", str(public_key_pem)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
