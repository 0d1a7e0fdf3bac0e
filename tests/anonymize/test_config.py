"""AnonymizeConfig validation and the operator-option mapping."""

from __future__ import annotations

import pytest

from secure_data.anonymize.config import AnonymizeConfig, DetectorSpec, config_from_options, params_digest
from secure_data.anonymize.modelfile import ModelIntegrityError

SHA = "ab" * 32


def spec(**kw) -> DetectorSpec:
    return DetectorSpec(kw.pop("model_path", "/models/det.pt"), kw.pop("model_sha256", SHA), **kw)


def test_detector_spec_validates_pin_suffix_and_kind():
    assert spec(model_sha256="sha256:" + SHA.upper()).model_sha256 == SHA
    with pytest.raises(ModelIntegrityError):
        spec(model_sha256="1234")
    with pytest.raises(ValueError, match="must end in"):
        spec(model_path="/models/det.bin")
    with pytest.raises(ValueError, match="must end in"):
        spec(model_path="/models/face.pt", kind="centerface")
    with pytest.raises(ValueError, match="kind"):
        spec(kind="ssd")
    assert spec().name == "yolo:det"


@pytest.mark.parametrize("bad", [
    {"mode": "swirl"}, {"shape": "star"}, {"conf": 1.5}, {"verify_conf": 0.0}, {"imgsz": 100},
    {"padding": 2.0}, {"blur_sigma": 0.01}, {"pixel_cells": 0}, {"fill_color": (1, 2)}, {"jpeg_quality": 0},
    {"device": "tpu"}, {"batch_size": 0}, {"on_residual": "ignore"}, {"residual_policy": "warn"}, {"classes": ()},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        AnonymizeConfig(detectors=(spec(),), **bad)


def test_config_needs_a_detector_and_unique_names():
    with pytest.raises(ValueError, match="at least one detector"):
        AnonymizeConfig(detectors=())
    with pytest.raises(ValueError, match="unique"):
        AnonymizeConfig(detectors=(spec(), spec()))


def test_config_round_trips_through_dict():
    cfg = AnonymizeConfig(detectors=(spec(conf=0.3, classes=["face"]),), classes=("face",), mode="pixelate",
                          fill_color=(1, 2, 3), verifiers=({"model_path": "/m/cf.onnx", "model_sha256": SHA,
                                                            "kind": "centerface"},))
    again = AnonymizeConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.verifiers[0].kind == "centerface"


def test_params_digest_depends_on_what_changes_output_only():
    a = AnonymizeConfig(detectors=(spec(),))
    b = AnonymizeConfig(detectors=(spec(model_path="/elsewhere/det.pt"),), read_workers=9)
    c = AnonymizeConfig(detectors=(spec(),), mode="fill")
    assert params_digest(a.params("cpu")) == params_digest(b.params("cpu"))  # path and threads: not output
    assert params_digest(a.params("cpu")) != params_digest(c.params("cpu"))
    assert params_digest(a.params("cpu")) != params_digest(a.params("cuda"))


def test_config_from_operator_options_with_aliases_and_text_values():
    cfg = config_from_options({
        "model_path": "/m/det.pt", "model_sha256": SHA, "face_model_path": "/m/centerface.onnx",
        "face_model_sha256": SHA, "classes": "['face', 'plate']", "mode": "pixelate", "box_padding": "0.15",
        "confidence": "0.3", "verify_confidence": 0.05, "imgsz": "320", "batch_size": "4", "device": "cpu",
        "residual_policy": "fail", "verify": "true",
    })
    assert [d.kind for d in cfg.detectors] == ["yolo", "centerface"]
    assert cfg.detectors[1].classes == ("face",)
    assert cfg.classes == ("face", "plate")
    assert (cfg.padding, cfg.conf, cfg.verify_conf, cfg.imgsz, cfg.batch_size) == (0.15, 0.3, 0.05, 320, 4)
    assert cfg.residual_policy == "fail" and cfg.verify is True
    as_verifier = config_from_options({"model_path": "/m/det.pt", "model_sha256": SHA, "classes": "face",
                                       "face_model_path": "/m/cf.onnx", "face_model_sha256": SHA,
                                       "face_model_role": "verifier", "face_model_unused": ""})
    assert [d.kind for d in as_verifier.verifiers] == ["centerface"] and as_verifier.classes == ("face",)


def test_config_from_options_requires_pins():
    with pytest.raises(ValueError, match="no detector"):
        config_from_options({"model_path": "", "classes": ["face"]})
    with pytest.raises(ValueError, match="model_sha256 is required"):
        config_from_options({"model_path": "/m/det.pt"})
    with pytest.raises(ValueError, match="face_model_sha256 is required"):
        config_from_options({"model_path": "/m/det.pt", "model_sha256": SHA, "face_model_path": "/m/cf.onnx"})
