"""Bad inputs that concern the whole dataset: data.yaml, and a dataset that is mostly garbage.

data.yaml holds the class names: it cannot be quarantined without orphaning every label, so
a data.yaml that cannot be used is a clear ``DatasetError`` (nothing checked), and one that
changed against the trusted reference fails the stage after writing the evidence.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import RunLayout
from secure_data.integrity import IntegrityConfig
from secure_data.integrity.run import DatasetError, IntegrityFailed
from secure_data_testkit.badinputs import count_entries, drop_last_class_name, inject_bad_inputs
from secure_data_testkit.datasets import make_yolo_dataset


@pytest.fixture
def run_integrity_quietly(quiet_integrity):
    return quiet_integrity


def _outcome(rec) -> str:
    return "quarantined" if not rec.accepted else ("accepted-with-warning" if rec.reasons else "accepted")


def test_data_yaml_missing_a_used_class_quarantines_exactly_the_samples_that_use_it(tmp_path, run_integrity_quietly):
    root = make_yolo_dataset(tmp_path / "ds", n_train=8, n_val=2, seed=4)
    bad = drop_last_class_name(root)
    assert {b.outcome for b in bad} == {"quarantined", "accepted"}  # this seed uses both classes
    result = run_integrity_quietly(root, RunLayout.for_run(tmp_path / "out", "dag", "run"))
    by_path = read_manifest(result.manifest_path).by_path()
    assert by_path["data.yaml"].meta["class_names"] == ["face"]
    for b in bad:
        for e in b.expectations:
            rec = by_path[e.path]
            assert _outcome(rec) == e.outcome and set(e.codes) <= {r.code for r in rec.reasons}, (e, rec.reasons)


def test_changed_data_yaml_against_the_reference_fails_the_stage_with_evidence(tmp_path, run_integrity_quietly):
    root = make_yolo_dataset(tmp_path / "ds", n_train=6, n_val=2, seed=5)
    first = run_integrity_quietly(root, RunLayout.for_run(tmp_path / "out", "dag", "trusted"))
    drop_last_class_name(root)  # the supplier "fixes" the class list: every class-1 box changes meaning
    from secure_data.integrity import run_integrity

    with pytest.raises(IntegrityFailed) as info:
        run_integrity(root, RunLayout.for_run(tmp_path / "out", "dag", "next"), config=IntegrityConfig(workers=2),
                      reference_manifest=first.manifest_path, reference_digest=first.manifest_digest)
    manifest = read_manifest(info.value.result.manifest_path, expected_digest=info.value.result.manifest_digest)
    assert "tamper_modified" in {r.code for r in manifest.by_path()["data.yaml"].reasons}
    assert manifest.header["verdict"] == "fail"
    assert len(manifest.records) == count_entries(root)


@pytest.mark.parametrize(("content", "message"), [
    (b"path: .\nnames:\n  0: face\n  2: plate\n", "without gaps"),  # a gap would shift every later class
    (b"path: .\ntrain: images/train\n", "no 'names'"),
    (b"names: []\n", "non-empty"),
    (b"names: [face, plate\n", "not valid UTF-8 YAML"),
    (b"names: [caf\xe9]\n", "not valid UTF-8 YAML"),
    (b"names: !!python/object/apply:os.system ['echo pwned']\n", "not valid UTF-8 YAML"),  # safe_load refuses tags
    (b"names: [face]\n" + b"#" * (2 * 1024 * 1024), "larger than"),
    (None, "not a regular file"),  # a symlink
    (b"", "missing"),
])
def test_unusable_data_yaml_is_a_clear_error(tmp_path, content, message, run_integrity_quietly):
    root = make_yolo_dataset(tmp_path / "ds", n_train=2, n_val=1, seed=6)
    target = root / "data.yaml"
    if content is None:
        (tmp_path / "elsewhere.yaml").write_bytes(target.read_bytes())
        target.unlink()
        os.symlink(tmp_path / "elsewhere.yaml", target)
    elif message == "missing":
        target.unlink()
    else:
        target.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        run_integrity_quietly(root, RunLayout.for_run(tmp_path / "out", "dag", "run"))


def test_a_mostly_bad_dataset_fails_the_stage_but_records_everything(tmp_path, run_integrity_quietly):
    """More bad images than good ones: the GX image-valid-rate gate fails the stage, after the manifest,
    quarantine and reports are written (accepted + quarantined = input still holds)."""
    root = make_yolo_dataset(tmp_path / "ds", n_train=3, n_val=1, seed=8)
    kinds = ["truncated_jpeg", "zero_byte_image", "text_named_jpg", "html_named_jpg", "png_bomb_header",
             "jpeg_bomb_header", "jpeg_missing_eoi", "fifo_named_jpg", "symlink_inside_root", "png_ztxt_bomb"]
    inject_bad_inputs(root, kinds=kinds)
    with pytest.raises(IntegrityFailed, match="gx_image_valid_rate") as info:
        run_integrity_quietly(root, RunLayout.for_run(tmp_path / "out", "dag", "run"))
    result = info.value.result
    manifest = read_manifest(result.manifest_path, expected_digest=result.manifest_digest)
    assert len(manifest.records) == count_entries(root) == result.counts["files"]
    assert result.counts["accepted"] + result.counts["quarantined"] == result.counts["files"]
    assert any(f["code"] == "gx_image_valid_rate" and f["action"] == "fail"
               for f in manifest.header["dataset_findings"])
    reason_files = list(Path(result.extra["quarantine_dir"]).rglob("*.reason.json"))
    assert len(reason_files) == result.counts["quarantined"]
