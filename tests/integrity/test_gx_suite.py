"""The Great Expectations gate (real GX 1.x, ephemeral context): Data Docs, and fail / warn / quarantine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from secure_data.dataset.manifest import read_manifest
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import IntegrityFailed, run_integrity


def _dup(root: Path) -> None:
    """A second copy of a sample under a new name: same image bytes, a duplicate hash."""
    for sub, ext in (("images", ".jpg"), ("labels", ".txt")):
        shutil.copy(root / sub / "train" / f"train_00000{ext}", root / sub / "train" / f"copy_00000{ext}")


def test_data_docs_html_lands_in_the_report_folder(dataset, layout_factory):
    layout = layout_factory()
    result = run_integrity(dataset, layout, config=IntegrityConfig(workers=2))
    docs = layout.report / "gx"
    assert Path(result.extra["gx_data_docs"]) == docs / "index.html"
    index = (docs / "index.html").read_text()
    assert "integrity_images" in index and "integrity_splits" in index and "integrity_classes" in index
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 3
    images_page = next(p for p in pages if p.name.endswith("images.html")).read_text()
    assert "values must be unique" in images_page and "sha256" in images_page
    header = read_manifest(result.manifest_path).header
    assert header["gx"]["success"] is True
    assert {e["code"] for e in header["gx"]["expectations"]} >= {
        "gx_duplicate_hash", "gx_format_not_allowed", "gx_width_out_of_bounds", "gx_height_out_of_bounds",
        "gx_image_valid_rate", "gx_label_valid_rate", "gx_split_size", "gx_class_count"}


@pytest.mark.parametrize(("policy", "status"), [("quarantine", "quarantined"), ("warn", "accepted")])
def test_duplicate_hash_row_failure_per_policy(dataset, layout_factory, policy, status):
    _dup(dataset)
    result = run_integrity(dataset, layout_factory(), config=IntegrityConfig(gx_policy=policy, workers=2))
    manifest = read_manifest(result.manifest_path)
    records = manifest.by_path()
    assert manifest.header["gx"]["success"] is False
    for path in ("images/train/train_00000.jpg", "images/train/copy_00000.jpg"):
        assert records[path].status == status
        assert "gx_duplicate_hash" in [r.code for r in records[path].reasons]
    # the label follows its image when the policy quarantines
    assert records["labels/train/copy_00000.txt"].status == status
    assert records["images/train/train_00001.jpg"].accepted and not records["images/train/train_00001.jpg"].reasons


def test_duplicate_hash_row_failure_can_fail_the_stage(dataset, layout_factory):
    _dup(dataset)
    with pytest.raises(IntegrityFailed, match="gx_duplicate_hash"):
        run_integrity(dataset, layout_factory(), config=IntegrityConfig(gx_policy="fail", workers=2))


def test_format_and_dimension_expectations(dataset, layout_factory):
    from PIL import Image

    small = dataset / "images" / "train" / "train_00001.jpg"
    with Image.open(small) as img:
        img.resize((40, 40)).save(small, format="JPEG")
    png = dataset / "images" / "train" / "train_00002.jpg"
    with Image.open(png) as img:
        img.save(dataset / "images" / "train" / "train_00002.png", format="PNG")
    png.unlink()
    cfg = IntegrityConfig(allowed_formats=("JPEG",), min_width=64, workers=2)
    records = read_manifest(run_integrity(dataset, layout_factory(), config=cfg).manifest_path).by_path()
    assert [r.code for r in records["images/train/train_00001.jpg"].reasons] == ["gx_width_out_of_bounds"]
    assert [r.code for r in records["images/train/train_00002.png"].reasons] == ["gx_format_not_allowed"]
    assert records["labels/train/train_00002.txt"].status == "quarantined"


def test_dataset_level_expectation_fails_or_warns(dataset, layout_factory):
    cfg = IntegrityConfig(min_images_per_split=5, required_splits=("train", "test"), workers=2)
    with pytest.raises(IntegrityFailed, match="gx_required_splits, gx_split_size") as info:
        run_integrity(dataset, layout_factory(), config=cfg)
    header = read_manifest(info.value.result.manifest_path).header
    findings = {f["code"]: f for f in header["dataset_findings"]}
    assert "val" in findings["gx_split_size"]["detail"] and "train" not in findings["gx_split_size"]["detail"]
    assert findings["gx_split_size"]["action"] == "fail"

    warn = IntegrityConfig(min_images_per_split=5, required_splits=("train", "test"), gx_dataset_policy="warn",
                           workers=2)
    result = run_integrity(dataset, layout_factory(), config=warn)
    header = read_manifest(result.manifest_path).header
    assert header["verdict"] == "warn" and result.counts["quarantined"] == 0
    assert {f["code"] for f in header["dataset_findings"]} == {"gx_split_size", "gx_required_splits"}


def test_class_count_and_label_validity_rate(dataset, layout_factory):
    for label in (dataset / "labels" / "train").glob("*.txt"):
        label.write_text("9 0.5 0.5 0.1 0.1\n")  # every train label invalid
    cfg = IntegrityConfig(min_boxes_per_class=1, min_label_valid_rate=0.9, gx_dataset_policy="warn", workers=2)
    header = read_manifest(run_integrity(dataset, layout_factory(), config=cfg).manifest_path).header
    codes = {f["code"]: f["detail"] for f in header["dataset_findings"]}
    assert "gx_label_valid_rate" in codes and "0.25" in codes["gx_label_valid_rate"]  # 2 valid of 8
    rate = next(e for e in header["gx"]["expectations"] if e["code"] == "gx_label_valid_rate")
    assert rate["observed_value"] == 0.25 and rate["success"] is False
