"""The optional feature_outlier check: spectral signatures on a real, pinned Ultralytics model (the demo yolo11n)."""

from __future__ import annotations

import hashlib
from dataclasses import fields

import pytest

from secure_data.anonymize.modelfile import ModelIntegrityError
from secure_data.dataset.manifest import read_manifest
from secure_data.poisoning import PoisoningConfig
from secure_data.poisoning.config import BACKBONE_FIELDS, CHECKS
from secure_data.poisoning.spectral import Backbone
from secure_data_testkit.attacks import inject_attack


@pytest.fixture(scope="module")
def detector():
    from secure_data_testkit.models import demo_detector

    return demo_detector()


@pytest.fixture(scope="module")
def backbone_config(detector) -> PoisoningConfig:
    path, sha = detector
    return PoisoningConfig(backbone_model=str(path), backbone_model_sha256=sha, backbone_device="cpu")


def test_wrong_sha_refuses_to_load(detector):
    path, sha = detector
    wrong = hashlib.sha256(b"not the model").hexdigest()
    with pytest.raises(ModelIntegrityError, match="does not match the pinned"):
        Backbone(PoisoningConfig(backbone_model=str(path), backbone_model_sha256=wrong, backbone_device="cpu"))
    with pytest.raises(ValueError, match="backbone_model_sha256 is required"):
        PoisoningConfig(backbone_model=str(path))


def test_backbone_layers_default_to_stride_8_and_16_of_the_backbone(backbone_config):
    bb = Backbone(backbone_config)
    try:
        assert bb.layers == (4, 6)  # yolo11: the last stride-8 and stride-16 layers before the neck
        assert bb.imgsz == 160  # the size the demo model was trained at
    finally:
        bb.close()


def test_no_model_configured_changes_nothing(clean_root, screen):
    plain = screen(clean_root, name="plain")
    # A DAG param rendered empty: the check stays off and every output is the same bytes as before it existed.
    knobs = screen(clean_root, PoisoningConfig.from_dict({"backbone_model": "", "backbone_model_sha256": "None"}),
                   name="knobs")
    assert knobs.result.manifest_digest == plain.result.manifest_digest
    assert knobs.result.extra["findings_digest"] == plain.result.extra["findings_digest"]
    header_config = plain.manifest.header["config"]
    assert not set(BACKBONE_FIELDS) & set(header_config)
    assert "feature_outlier" not in header_config["policies"]
    assert not plain.suspects("feature_outlier")


def test_flags_relabelled_boxes_and_quarantines_them(clean_root, screen, tmp_path, backbone_config):
    ds = inject_attack(clean_root, tmp_path / "flip", attack="label_flip", rate=0.10, seed=3)
    config = backbone_config.with_policies(feature_outlier="quarantine")
    attacked = screen(ds.root, config, name="attacked")
    flagged = attacked.suspects("feature_outlier")
    tp = len(flagged & ds.poisoned)
    assert tp >= 0.8 * len(ds.poisoned), (tp, len(ds.poisoned))
    assert tp >= 0.9 * len(flagged), (tp, len(flagged))
    found = [f for f in attacked.findings if f["check"] == "feature_outlier"]
    box = found[0]["evidence"]["boxes"][0]
    assert {"box", "class", "score", "z", "threshold", "projection"} <= set(box)
    assert abs(box["z"]) > box["threshold"] == config.feature_outlier_z
    assert found[0]["evidence"]["layers"] == [4, 6]
    assert found[0]["action"] == "quarantine"
    manifest = read_manifest(attacked.result.manifest_path, expected_digest=attacked.result.manifest_digest)
    quarantined = {r.sample for r in manifest.records if not r.accepted and any(
        reason.code == "poisoning.feature_outlier" for reason in r.reasons)}
    assert quarantined == flagged

    clean = screen(clean_root, backbone_config, name="clean")
    n_images = sum(1 for r in clean.manifest.records if r.kind == "image")
    assert len(clean.suspects("feature_outlier")) <= 0.01 * n_images
    assert clean.manifest.header["config"]["backbone_model_sha256"] == backbone_config.backbone_model_sha256


def test_config_round_trip_from_rendered_strings(detector):
    path, sha = detector
    config = PoisoningConfig.from_dict({
        "backbone_model": str(path), "backbone_model_sha256": "sha256:" + sha.upper(),
        "backbone_device": "cuda:1", "backbone_imgsz": "320", "backbone_batch": "8",
        "backbone_layers": "4, 6", "feature_outlier_z": "7.5", "feature_min_class_boxes": "30",
        "backbone_policy": "quarantine",
    })
    assert config.backbone_model_sha256 == sha
    assert (config.backbone_imgsz, config.backbone_batch, config.backbone_layers) == (320, 8, (4, 6))
    assert config.feature_outlier_z == 7.5 and config.action("feature_outlier") == "quarantine"
    assert PoisoningConfig.from_dict(config.to_dict()) == config
    assert PoisoningConfig.from_dict({"backbone_layers": [16, 19]}).backbone_layers == (16, 19)
    off = PoisoningConfig.from_dict({"backbone_model": "", "feature_outlier_policy": "fail"})
    assert not off.backbone_enabled and off.action("feature_outlier") == "fail"
    assert PoisoningConfig.from_dict(off.to_dict()) == off
    tuned_off = PoisoningConfig(feature_outlier_z=4.0)
    assert tuned_off.to_dict()["feature_outlier_z"] == 4.0 and "backbone_model" not in tuned_off.to_dict()
    assert PoisoningConfig.from_dict(tuned_off.to_dict()) == tuned_off
    assert "feature_outlier" in CHECKS and {f.name for f in fields(PoisoningConfig)} >= set(BACKBONE_FIELDS)
    with pytest.raises(ValueError, match="backbone_device"):
        PoisoningConfig(backbone_device="gpu")
    with pytest.raises(ValueError, match="list of integers"):
        PoisoningConfig.from_dict({"backbone_layers": "four"})
