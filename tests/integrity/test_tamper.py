"""Tamper diff against a reference (last trusted) manifest: added, removed, modified, each per policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secure_data.dataset.manifest import ManifestError, read_manifest
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import IntegrityFailed, run_integrity

CFG = IntegrityConfig(workers=2)


def _tamper(root: Path) -> None:
    # modified: one byte of a label; removed: an image; added: a new label-less image copy (new bytes)
    label = root / "labels" / "train" / "train_00001.txt"
    label.write_text(label.read_text().replace("0.", "0.1", 1))
    (root / "images" / "train" / "train_00002.jpg").unlink()
    from PIL import Image

    with Image.open(root / "images" / "train" / "train_00003.jpg") as img:
        img.rotate(90).save(root / "images" / "train" / "new_00099.jpg", format="JPEG")
    (root / "labels" / "train" / "new_00099.txt").write_text("0 0.5 0.5 0.2 0.2\n")


@pytest.fixture
def reference(dataset, layout_factory):
    result = run_integrity(dataset, layout_factory("trusted"), config=CFG)
    return result.manifest_path, result.manifest_digest


def test_unchanged_dataset_has_an_empty_diff(dataset, reference, layout_factory):
    path, digest = reference
    result = run_integrity(dataset, layout_factory(), config=CFG, reference_manifest=path, reference_digest=digest)
    header = read_manifest(result.manifest_path).header
    assert header["tamper"]["added"] == header["tamper"]["removed"] == header["tamper"]["modified"] == 0
    assert header["tamper"]["reference_digest"] == digest
    assert header["verdict"] == "pass"


def test_added_removed_modified_with_default_policies(dataset, reference, layout_factory):
    path, digest = reference
    _tamper(dataset)
    result = run_integrity(dataset, layout_factory(), config=CFG, reference_manifest=path, reference_digest=digest)
    manifest = read_manifest(result.manifest_path, expected_digest=result.manifest_digest)
    records = manifest.by_path()
    assert manifest.header["tamper"] | {"diff_digest": None, "reference_digest": None} == {
        "added": 2, "removed": 1, "modified": 1, "diff_digest": None, "reference_digest": None}
    # modified -> quarantine (the sample moves with it)
    assert [r.code for r in records["labels/train/train_00001.txt"].reasons] == ["tamper_modified"]
    assert records["labels/train/train_00001.txt"].status == "quarantined"
    assert records["images/train/train_00001.jpg"].status == "quarantined"
    # added -> warn (still checked like every file)
    assert records["images/train/new_00099.jpg"].accepted
    assert [r.code for r in records["images/train/new_00099.jpg"].reasons] == ["tamper_added"]
    # removed -> warn, on the surviving partner and in the header
    partner = records["labels/train/train_00002.txt"]
    assert "tamper_removed" in [r.code for r in partner.reasons]
    assert "images/train/train_00002.jpg" not in records
    assert any(f["code"] == "tamper_removed" for f in manifest.header["dataset_findings"])
    # the diff file lists each change, canonical and digested in the header
    diff = Path(result.extra["tamper_diff"]).read_bytes()
    lines = [json.loads(x) for x in diff.decode().splitlines()]
    assert lines[0]["reference_digest"] == digest
    assert [(c["change"], c["path"]) for c in lines[1:]] == [
        ("added", "images/train/new_00099.jpg"), ("removed", "images/train/train_00002.jpg"),
        ("added", "labels/train/new_00099.txt"), ("modified", "labels/train/train_00001.txt"),
    ]
    import hashlib

    assert manifest.header["tamper"]["diff_digest"] == "sha256:" + hashlib.sha256(diff).hexdigest()


@pytest.mark.parametrize(("policy", "expect"), [("quarantine", "quarantined"), ("warn", "accepted"), ("fail", None)])
def test_added_file_policy(dataset, reference, layout_factory, policy, expect):
    path, digest = reference
    _tamper(dataset)
    cfg = IntegrityConfig(tamper_added=policy, workers=2)
    if expect is None:
        with pytest.raises(IntegrityFailed, match="tamper_added"):
            run_integrity(dataset, layout_factory(), config=cfg, reference_manifest=path, reference_digest=digest)
        return
    result = run_integrity(dataset, layout_factory(), config=cfg, reference_manifest=path, reference_digest=digest)
    assert read_manifest(result.manifest_path).by_path()["images/train/new_00099.jpg"].status == expect


def test_removed_file_can_fail_the_stage(dataset, reference, layout_factory):
    path, digest = reference
    (dataset / "labels" / "val" / "val_00000.txt").unlink()
    with pytest.raises(IntegrityFailed, match="tamper_removed"):
        run_integrity(dataset, layout_factory(), config=IntegrityConfig(tamper_removed="fail", workers=2),
                      reference_manifest=path, reference_digest=digest)


def test_a_tampered_reference_is_refused(dataset, reference, layout_factory, tmp_path):
    path, digest = reference
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(Path(path).read_bytes().replace(b'"accepted"', b'"quarantined"', 1))
    with pytest.raises(ManifestError, match="expected"):
        run_integrity(dataset, layout_factory(), config=CFG, reference_manifest=str(forged), reference_digest=digest)


def test_a_modified_data_yaml_fails_rather_than_orphaning_every_label(dataset, reference, layout_factory):
    path, digest = reference
    (dataset / "data.yaml").write_text((dataset / "data.yaml").read_text().replace("plate", "licence_plate"))
    with pytest.raises(IntegrityFailed, match="tamper_modified") as info:
        run_integrity(dataset, layout_factory(), config=CFG, reference_manifest=path, reference_digest=digest)
    header = read_manifest(info.value.result.manifest_path).header
    assert header["class_names"] == ["face", "licence_plate"] and header["actions"]["tamper_modified"] == "fail"
