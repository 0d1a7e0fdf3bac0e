"""Real faces (photographs from PyPI wheels), real detectors from pinned wheels: scale, labels, independent verification."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from secure_data.anonymize import AnonymizeConfig, DetectorSpec, run_anonymize_shard
from secure_data.anonymize.audit import read_audit_lines
from secure_data.anonymize.builtin import fetch
from secure_data.anonymize.codec import decode_cpu
from secure_data.dataset.stage import RunLayout
from secure_data_testkit import real_faces
from secure_data_testkit.models import CACHE_DIR


@pytest.fixture(scope="module")
def cf():
    return fetch("centerface", CACHE_DIR)


@pytest.fixture(scope="module")
def bf():
    return fetch("blazeface", CACHE_DIR)


@pytest.fixture(scope="module")
def photos():
    import cv2

    return {p.name: cv2.imdecode(np.frombuffer(real_faces.photo_bytes(p, CACHE_DIR), np.uint8), cv2.IMREAD_COLOR)
            for p in real_faces.PHOTOS + real_faces.NEGATIVES}


def _chw(bgr) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1).contiguous()


def _centre_hit(face, boxes) -> bool:
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    return any(b.x1 <= cx <= b.x2 and b.y1 <= cy <= b.y2 for b in boxes)


def _engine_detector(spec: DetectorSpec, **config):
    from secure_data.anonymize.detect import load_detector

    cfg = AnonymizeConfig(detectors=(spec,), classes=("face",), device="cpu", **config)
    return load_detector(spec, cfg, "cpu")


def _small_face_scene(photos, face_px: int = 14):
    """A 1920x1080 backdrop with one real face (t1's first) shrunk to ``face_px`` wide, and its box."""
    import cv2

    rng = __import__("random").Random(5)
    canvas = real_faces._backdrop(photos, rng)
    t1 = photos["t1"]
    fx1, fy1, fx2, fy2 = real_faces.PHOTOS[5].faces[1]
    s = face_px / (fx2 - fx1)
    cx1, cy1 = int(fx1 - (fx2 - fx1)), int(fy1 - (fy2 - fy1))
    crop = t1[cy1:int(fy2 + (fy2 - fy1)), cx1:int(fx2 + (fx2 - fx1))]
    patch = cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_AREA)
    x, y = 1200, 600
    real_faces._paste(canvas, patch, x, y)
    return canvas, [x + (fx1 - cx1) * s, y + (fy1 - cy1) * s, x + (fx2 - cx1) * s, y + (fy2 - cy1) * s]


def test_native_resolution_and_tiles_find_a_14px_face_that_one_640px_pass_misses(photos, cf, bf):
    scene, face = _small_face_scene(photos, 14)
    image = _chw(scene)
    native = _engine_detector(DetectorSpec(str(cf[0]), cf[1], kind="centerface", conf=0.1))
    single = _engine_detector(DetectorSpec(str(cf[0]), cf[1], kind="centerface", conf=0.1, imgsz=640))
    whole = _engine_detector(DetectorSpec(str(bf[0]), bf[1], kind="blazeface"))
    assert whole.net.backend == "openvino"  # the default on the CPU (whole-image passes)
    assert not _centre_hit(face, single.detect([image], 0.1)[0])  # 14 px at 1920 -> 4.7 px at 640
    assert _centre_hit(face, native.detect([image], 0.1)[0])
    assert _centre_hit(face, whole.detect([image], 0.5)[0])
    from secure_data.anonymize.blazeface import INPUT, BlazeFaceDetector, scale_plan, tile_plan

    tiled = BlazeFaceDetector(str(bf[0]), bf[1], backend="litert")
    boxes, _ = tiled.detect(np.ascontiguousarray(scene[:, :, ::-1]), 0.5)
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    assert any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes.tolist())
    one_tile = tile_plan(1080, 1920, min_face_px=1080 / INPUT * 12)  # what a single-pass plan would look like
    assert len(tile_plan(1080, 1920, min_face_px=12)) > len(one_tile) >= 1
    assert scale_plan(1080, 1920, min_face_px=12)[0] == 1.0  # native resolution first
    assert scale_plan(1080, 1920, min_face_px=6)[0] == 2.0


def test_whole_image_blazeface_is_the_shipped_network(photos, bf, monkeypatch):
    """The OpenVINO graph surgery (outputs before the reshapes, upsamplings as 2x scales) computes what
    Google's LiteRT computes with the model exactly as shipped, on the model's own 192 px input."""
    import cv2

    from secure_data.anonymize.blazeface import INPUT, BlazeFaceDetector

    monkeypatch.setenv("SECURE_DATA_INFERENCE_PRECISION", "f32")
    whole = BlazeFaceDetector(str(bf[0]), bf[1], backend="openvino")
    lite = BlazeFaceDetector(str(bf[0]), bf[1], backend="litert")
    assert whole.precision == "f32"
    rgb = np.ascontiguousarray(cv2.resize(photos["t1"], (INPUT, INPUT))[:, :, ::-1])
    boxes, logits = whole.raw_fcn(rgb)
    ref_boxes, ref_logits = lite._run(rgb[None].astype(np.float32) / 127.5 - 1.0)
    assert boxes.shape == (48, 48, 16) and logits.shape == (48, 48)
    np.testing.assert_allclose(boxes.reshape(-1, 16), ref_boxes[0], atol=1e-3)
    np.testing.assert_allclose(logits.reshape(-1), ref_logits[0, :, 0], atol=1e-3)
    assert (ref_logits > 0).any()  # t1 has faces: the comparison covers confident cells too


def test_labelled_boxes_are_obfuscated_whatever_the_detectors_say(tmp_path, photos, demo_model):
    """A real face the only detector cannot see (the demo YOLO knows drawn faces, and runs at 0.99 here) is
    blurred because the dataset's label marks it (class name "Face" in data.yaml)."""
    import cv2

    root = tmp_path / "ds"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    img = photos["grace_hopper"]
    h, w = img.shape[:2]
    cv2.imwrite(str(root / "images" / "train" / "gh.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    x1, y1, x2, y2 = real_faces.PHOTOS[4].faces[0]
    (root / "labels" / "train" / "gh.txt").write_text(
        f"1 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames:\n  0: car\n  1: Face\n")
    layout = RunLayout.for_run(tmp_path / "out", "dag", "labels")
    from secure_data_testkit.manifests import upstream_for

    up = upstream_for(root, layout)
    deaf = DetectorSpec(str(demo_model[0]), demo_model[1], name="deaf", conf=0.99)
    cfg = AnonymizeConfig(detectors=(deaf,), classes=("face",), imgsz=320, device="cpu", verify=False)
    result = run_anonymize_shard(up, layout, config=cfg)
    line = read_audit_lines(result["audit_path"])[0]
    assert [b[4:7] for b in line["boxes"]] == [["face", 1.0, "label"]]
    assert result["counts"]["boxes_per_source"] == {"label": 1}
    out = cv2.imread(str(layout.stage("anonymize") / "data" / "images" / "train" / "gh.jpg"), cv2.IMREAD_GRAYSCALE)
    src = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)

    def detail(g):
        return float(cv2.Laplacian(g[y1:y2, x1:x2].astype(np.float32), cv2.CV_32F).var())

    assert detail(out) < 0.1 * detail(src)
    assert line["utility"]["area_outside_labels"] < 0.5  # only the label's padding lies outside it

    # Without the label class in the protected label names, nothing protects that face here.
    layout2 = RunLayout.for_run(tmp_path / "out", "dag", "nolabels")
    result2 = run_anonymize_shard(upstream_for(root, layout2), layout2,
                                  config=AnonymizeConfig(detectors=(deaf,), classes=("face",), imgsz=320,
                                                         device="cpu", verify=False, label_classes=()))
    assert result2["counts"]["boxes"] == 0


def test_a_verifier_of_another_family_catches_faces_the_detector_misses(tmp_path, demo_model, cf, bf):
    """The detector is the demo YOLO (it knows drawn faces, not real ones); BlazeFace, verifying, finds the
    real faces of zidane.jpg in its output; they are re-obfuscated, and CenterFace (used by neither, as
    judge) finds no face in the published image."""
    root = tmp_path / "photos"
    (root / "images" / "train").mkdir(parents=True)
    shutil.copyfile(real_faces_path("zidane"), root / "images" / "train" / "zidane.jpg")
    layout = RunLayout.for_run(tmp_path / "out", "dag", "verify")
    from secure_data_testkit.manifests import upstream_for

    up = upstream_for(root, layout)
    yolo = DetectorSpec(str(demo_model[0]), demo_model[1], conf=0.5)
    verifier = DetectorSpec(str(bf[0]), bf[1], kind="blazeface", name="blazeface", classes=("face",), conf=0.5)
    cfg = AnonymizeConfig(detectors=(yolo,), verifiers=(verifier,), classes=("face", "plate"), imgsz=320,
                          device="cpu", max_passes=3)
    result = run_anonymize_shard(up, layout, config=cfg)
    assert result["independent"] == {"face": ["blazeface"], "plate": []}
    assert result["self_checked"] == {yolo.name: ["plate"]}
    line = read_audit_lines(result["audit_path"])[0]
    assert line["status"] == "anonymized", line["reasons"]
    caught = [b for b in line["boxes"] if b[6] == "blazeface" and b[7] >= 1]
    zidane = real_faces.PHOTOS[1].faces[1]  # the face the demo YOLO does not see
    assert not any(b[6].startswith("yolo:") and b[4] == "face" and b[0] <= (zidane[0] + zidane[2]) / 2 <= b[2]
                   for b in line["boxes"])
    assert any(b[0] <= (zidane[0] + zidane[2]) / 2 <= b[2] and b[1] <= (zidane[1] + zidane[3]) / 2 <= b[3]
               for b in caught), line["boxes"]
    assert result["counts"]["residual_first_pass"] >= 1
    assert line["verification"]["clean"] and "blazeface" in line["verification"]["verified_by"]
    judge = _engine_detector(DetectorSpec(str(cf[0]), cf[1], kind="centerface", conf=0.5))
    out = decode_cpu((layout.stage("anonymize") / "data" / "images" / "train" / "zidane.jpg").read_bytes())
    assert judge.detect([out], 0.5)[0] == []
    assert judge.detect([decode_cpu((root / "images" / "train" / "zidane.jpg").read_bytes())], 0.5)[0]


def real_faces_path(name: str) -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / f"{name}.jpg"


def test_real_face_set_is_pinned_and_its_boxes_hold(photos, cf):
    """The hand-checked boxes of the base photographs are where CenterFace (at native resolution) finds faces."""
    det = _engine_detector(DetectorSpec(str(cf[0]), cf[1], kind="centerface", conf=0.3))
    for photo in real_faces.PHOTOS:
        found = det.detect([_chw(photos[photo.name])], 0.3)[0]
        assert all(_centre_hit(f, found) for f in photo.faces), photo.name
