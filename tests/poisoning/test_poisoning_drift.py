"""Drift against a reference manifest, with Great Expectations' KL-divergence expectation."""

from __future__ import annotations

import json
import random

import pytest

from secure_data.dataset.manifest import ManifestError
from secure_data.dataset.stage import RunLayout
from secure_data.poisoning import PoisoningCheckFailed, PoisoningConfig, run_poisoning
from secure_data.poisoning.findings import read_findings
from secure_data_testkit.attacks import integrity_like_manifest, make_clean_dataset


@pytest.fixture(scope="module")
def reference(clean_root, tmp_path_factory):
    return integrity_like_manifest(clean_root, tmp_path_factory.mktemp("ref"))


def _relabel(root, share: float, seed: int = 0) -> None:
    """Turn ``share`` of the plate boxes into faces (label files only)."""
    rng = random.Random(seed)
    for path in sorted((root / "labels").rglob("*.txt")):
        lines = [ln.split() for ln in path.read_text().splitlines()]
        lines = [["0", *p[1:]] if p[0] == "1" and rng.random() < share else p for p in lines]
        path.write_text("".join(" ".join(p) + "\n" for p in lines))


def test_same_distribution_is_no_drift(reference, tmp_path):
    other = make_clean_dataset(tmp_path / "other", n_train=320, n_val=80, seed=99)
    up = integrity_like_manifest(other, tmp_path / "integrity")
    result = run_poisoning(up, RunLayout(tmp_path / "run"), reference_manifest=reference.manifest_path,
                           reference_digest=reference.manifest_digest)
    assert not [f for f in read_findings(result.extra["findings_path"]) if f["check"] == "distribution_drift"]
    doc = json.loads(open(result.extra["drift_path"]).read())
    names = {r["distribution"] for r in doc["results"]}
    assert {"class_balance", "boxes_per_image", "log_area[face]", "log_aspect[plate]"} <= names
    assert all(r["success"] and r["kl_divergence"] < 0.1 for r in doc["results"])


def test_class_balance_shift_is_found_and_names_the_grown_class(reference, dataset, tmp_path):
    _relabel(dataset, share=0.6)
    up = integrity_like_manifest(dataset, tmp_path / "integrity")
    result = run_poisoning(up, RunLayout(tmp_path / "run"), reference_manifest=reference.manifest_path,
                           config=PoisoningConfig(policies={"class_confusion": "warn", "box_outlier": "warn"}))
    drift = [f for f in read_findings(result.extra["findings_path"]) if f["check"] == "distribution_drift"]
    balance = [f for f in drift if f["evidence"]["distribution"] == "class_balance"]
    assert len(balance) == 1 and balance[0]["action"] == "warn" and balance[0]["suspects"] == []
    ev = balance[0]["evidence"]
    assert ev["kl_divergence"] > 0.1 and ev["over_represented"] == "face"
    assert ev["chi_square"]["p_value"] < 1e-6
    assert balance[0]["involved"] and ev["involved_total"] >= len(balance[0]["involved"])


def test_drift_fail_policy_fails_the_stage(reference, dataset, tmp_path):
    _relabel(dataset, share=0.6)
    up = integrity_like_manifest(dataset, tmp_path / "integrity")
    config = PoisoningConfig.from_dict({"drift_policy": "fail", "outlier_policy": "warn"})
    with pytest.raises(PoisoningCheckFailed, match="distribution_drift"):
        run_poisoning(up, RunLayout(tmp_path / "run"), reference_manifest=reference.manifest_path, config=config)


def test_reference_with_wrong_digest_is_refused(reference, dataset, tmp_path):
    up = integrity_like_manifest(dataset, tmp_path / "integrity")
    with pytest.raises(ManifestError):
        run_poisoning(up, RunLayout(tmp_path / "run"), reference_manifest=reference.manifest_path,
                      reference_digest="sha256:" + "1" * 64)
