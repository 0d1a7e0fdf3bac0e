"""Packaging a stage's output: accepted records only, lineage digests, and idempotent retries."""

from __future__ import annotations

import pytest

from secure_data.handoff.from_stage import derived_package_id, package_stage
from secure_data.handoff.package import PackageError, PackageFormatError, package_path
from secure_data_testkit.datasets import stage_result_for


def _stage(dataset, out, *, quarantine=(), name="anonymize"):
    return stage_result_for(dataset, out, quarantine=set(quarantine), name=name)


def test_retry_reuses_the_published_package(small_dataset, sanitizer_ks, tmp_path):
    stage = _stage(small_dataset, tmp_path)
    pid = derived_package_id("sanitized", "dag", "run-1", stage.manifest_digest)
    assert pid == derived_package_id("sanitized", "dag", "run-1", stage.manifest_digest)
    first = package_stage(stage, tmp_path / "pk", sanitizer_ks, name="sanitized", package_id=pid)
    header = package_path(first.uri) / "header.json"
    stamp = header.stat().st_mtime_ns
    again = package_stage(stage, tmp_path / "pk", sanitizer_ks, name="sanitized", package_id=pid)
    assert again == first and header.stat().st_mtime_ns == stamp  # verified and reused, not rebuilt

    other_input = _stage(small_dataset, tmp_path, quarantine={"images/train/train_00000.jpg"}, name="anonymize")
    with pytest.raises(PackageError, match="different upstream"):
        package_stage(other_input, tmp_path / "pk", sanitizer_ks, name="sanitized", package_id=pid)


def test_a_stage_without_data_yaml_is_refused(small_dataset, sanitizer_ks, tmp_path):
    stage = _stage(small_dataset, tmp_path, quarantine={"data.yaml"})
    with pytest.raises(PackageFormatError, match="data.yaml"):
        package_stage(stage, tmp_path / "pk", sanitizer_ks, name="sanitized")


def test_large_files_are_streamed_and_checked(small_dataset, sanitizer_ks, trainer_ks, tmp_path):
    from secure_data.handoff.consumer import open_package

    stage = _stage(small_dataset, tmp_path)
    info = package_stage(stage, tmp_path / "pk", sanitizer_ks, name="big", stream_threshold=1000)
    with open_package(info.uri, trainer_ks) as pkg:
        assert (pkg.path / "images/val/val_00000.jpg").read_bytes() == \
            (small_dataset / "images/val/val_00000.jpg").read_bytes()
    (small_dataset / "images/val/val_00000.jpg").write_bytes(b"changed after the manifest was written" * 100)
    from secure_data.dataset.manifest import IntegrityError

    with pytest.raises(IntegrityError, match="val_00000.jpg"):
        package_stage(stage, tmp_path / "pk2", sanitizer_ks, name="big", stream_threshold=1000)
    assert not any((tmp_path / "pk2").iterdir())
