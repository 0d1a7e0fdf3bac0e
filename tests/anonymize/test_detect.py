"""Real models: pins are enforced before loading; the demo YOLO finds the generated objects; found boxes are gone."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from secure_data.anonymize import AnonymizeConfig, DetectorSpec, ModelIntegrityError, run_anonymize_shard
from secure_data.anonymize.codec import decode_cpu, encode
from secure_data.anonymize.engine import ESCALATION_PADDING_STEP, AnonymizeEngine
from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import RunLayout
from secure_data_testkit.datasets import draw_sample


class _Tripwire:
    """Unpickling this creates a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_model_with_wrong_pin_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Tripwire(marker)}))
    cfg = AnonymizeConfig(detectors=(DetectorSpec(str(evil), "0" * 64),), device="cpu")
    with pytest.raises(ModelIntegrityError, match="does not match the pinned"):
        AnonymizeEngine(cfg)
    assert not marker.exists()


def test_tampered_copy_of_a_real_model_is_refused(tmp_path, demo_model, centerface):
    path, sha = demo_model
    tampered = tmp_path / "model.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError):
        AnonymizeEngine(AnonymizeConfig(detectors=(DetectorSpec(str(tampered), sha),), device="cpu"))
    cf_path, cf_sha = centerface
    with pytest.raises(ModelIntegrityError):
        AnonymizeEngine(AnonymizeConfig(
            detectors=(DetectorSpec(str(path), sha),),
            verifiers=(DetectorSpec(str(cf_path), sha, kind="centerface"),), device="cpu"))


def test_unknown_class_is_a_clear_error(demo_model):
    path, sha = demo_model
    with pytest.raises(ValueError, match="no detector provides class"):
        AnonymizeEngine(AnonymizeConfig(detectors=(DetectorSpec(str(path), sha),), classes=("faces",), device="cpu"))


@pytest.fixture(scope="module")
def engine(demo_model):
    path, sha = demo_model
    return AnonymizeEngine(AnonymizeConfig(detectors=(DetectorSpec(str(path), sha),), imgsz=160, batch_size=8,
                                           device="cpu"))


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_demo_detector_finds_the_generated_objects(engine):
    rng = np.random.default_rng(2024)  # not the training seed
    samples = [draw_sample(rng, 320, 240) for _ in range(16)]
    images = [torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1) for img, _ in samples]
    found = engine._detect(images)
    names = {0: "face", 1: "plate"}
    truth = [(b, names[b.cls]) for _, boxes in samples for b in boxes]
    hits = 0
    for (_, gt_boxes), dets in zip(samples, found, strict=True):
        for g in gt_boxes:
            hits += any(d.label == names[g.cls] and iou((g.x1, g.y1, g.x2, g.y2), (d.x1, d.y1, d.x2, d.y2)) >= 0.5
                        for d in dets)
    assert len(truth) >= 25
    assert hits / len(truth) >= 0.9, f"recall {hits}/{len(truth)}"
    n_det = sum(len(d) for d in found)
    assert n_det <= len(truth) * 1.2, f"{n_det} detections for {len(truth)} objects"


def detail(x: np.ndarray) -> float:
    x = x.astype(np.float32)
    return float(np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean())


def test_every_found_box_is_obfuscated_in_the_output_files(tmp_path, engine, make_upstream):
    import cv2

    from secure_data_testkit.datasets import make_yolo_dataset

    root = make_yolo_dataset(tmp_path / "ds", n_train=12, n_val=4, width=320, height=240, seed=99)
    layout = RunLayout.for_run(tmp_path / "out", "dag", "boxes")
    up = make_upstream(root, layout)
    result = run_anonymize_shard(up, layout, config=engine.config, engine=engine)
    assert result["counts"]["anonymized"] + result["counts"]["quarantined"] == 16
    assert result["counts"]["anonymized"] >= 12
    lines = {}
    from secure_data.anonymize.audit import read_audit_lines

    for line in read_audit_lines(result["audit_path"]):
        lines[line["path"]] = line
    out_root = layout.stage("anonymize") / "data"
    checked = 0
    for path, line in lines.items():
        if line["status"] != "anonymized":
            continue
        before = cv2.imread(str(root / path))
        after = cv2.imread(str(out_root / path))
        covered = np.zeros(before.shape[:2], bool)
        for x1, y1, x2, y2, label, _score, source, pass_no, _mode in line["boxes"]:
            assert label in ("face", "plate") and (source.startswith("yolo:") or source == "label")
            xa, ya, xb, yb = int(np.ceil(x1)), int(np.ceil(y1)), int(x2), int(y2)
            if xb - xa < 4 or yb - ya < 4:
                continue
            # Detail inside every found box is gone (blur, or fill if a re-pass escalated).
            assert detail(after[ya:yb, xa:xb]) < 0.35 * detail(before[ya:yb, xa:xb]) + 1.0, (path, label)
            # The obfuscated region: the box, padded (more on each re-pass), plus a 16 px JPEG block and
            # the decoder's chroma upsampling, which reads one pixel across block edges.
            m = int((engine.config.padding + ESCALATION_PADDING_STEP * pass_no) * max(xb - xa, yb - ya)) + 24
            covered[max(0, ya - m):yb + m, max(0, xa - m):xb + m] = True
            checked += 1
        # Away from the boxes nothing changed: JPEG works on 8x8 (16x16 with chroma) blocks, so the
        # output there equals the untouched input passed through the same encoder, pixel for pixel.
        same = encode([decode_cpu((root / path).read_bytes())], [".jpg"], engine.config.jpeg_quality)[0]
        reference = cv2.imdecode(np.frombuffer(same, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(after[~covered], reference[~covered]), path
        assert (~covered).mean() > 0.2
    assert checked >= 20
    # The upstream manifest is untouched and the audit names the model and its pin.
    assert read_manifest(up.manifest_path, expected_digest=up.manifest_digest)
    assert all(line["models"] == engine.models for line in lines.values())
