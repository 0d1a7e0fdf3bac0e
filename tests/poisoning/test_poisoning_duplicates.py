"""Duplicates: label comparison, geometric verification, who gets blamed, leakage across splits."""

from __future__ import annotations

import cv2
import numpy as np

from secure_data.poisoning.duplicates import compare_labels, labels_conflict, map_boxes, verify_pair
from secure_data_testkit.attacks import near_copy


def _boxes(path):
    return [(int(p[0]), *map(float, p[1:])) for p in (line.split() for line in path.read_text().splitlines())]


def _write_label(path, boxes):
    path.write_text("".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in boxes))


def test_compare_labels_counts_agreement_flips_and_missing():
    a = [(0, 0.3, 0.3, 0.2, 0.2), (1, 0.7, 0.7, 0.3, 0.1)]
    same = compare_labels(a, [(0, 0.31, 0.3, 0.2, 0.2), (1, 0.7, 0.7, 0.3, 0.1)], mirrored=False, iou=0.5)
    assert same["same"] == 2 and not labels_conflict(same)
    flipped = compare_labels(a, [(1, 0.3, 0.3, 0.2, 0.2)], mirrored=False, iou=0.5)
    assert flipped["class_changed"] == 1 and flipped["only_in_first"] == 1 and labels_conflict(flipped)
    mirror = compare_labels(a, [(0, 0.7, 0.3, 0.2, 0.2), (1, 0.3, 0.7, 0.3, 0.1)], mirrored=True, iou=0.5)
    assert mirror["same"] == 2


def test_boxes_the_other_picture_does_not_show_are_left_out_of_the_comparison():
    import pytest

    from secure_data.poisoning import PoisoningConfig

    a = [(0, 0.3, 0.3, 0.2, 0.2), (1, 0.7, 0.7, 0.3, 0.1)]
    b = [(1, 0.3, 0.3, 0.2, 0.2), (0, 0.1, 0.9, 0.1, 0.1)]
    plain = compare_labels(a, b, mirrored=False, iou=0.5)
    assert plain["class_changed"] == 1 and plain["only_in_first"] == 1 and plain["only_in_second"] == 1
    # the re-classed box shows the same thing in both (0.95); the others cover what the other picture lacks
    seen = compare_labels(a, b, mirrored=False, iou=0.5, agreement=((0.95, 0.2), (0.95, 0.1)), min_agreement=0.65)
    assert (seen["class_changed"], seen["only_in_first"], seen["only_in_second"]) == (1, 0, 0)
    assert (seen["unseen_in_second"], seen["unseen_in_first"]) == (1, 1) and labels_conflict(seen)
    # a re-classed box over different content is no flip; unknown agreement (None) still counts
    moved = compare_labels(a, b, mirrored=False, iou=0.5, agreement=((0.3, None), (0.3, 0.1)), min_agreement=0.65)
    assert moved["class_changed"] == 0 and moved["only_in_first"] == 1 and moved["unseen_in_second"] == 1
    with pytest.raises(ValueError, match="dup_box_min_agreement"):
        PoisoningConfig(dup_box_min_agreement=1.5)
    assert PoisoningConfig.from_dict({"dup_box_min_agreement": "0"}).dup_box_min_agreement == 0.0


def test_map_boxes_through_identity_and_mirror():
    box = [(0, 0.25, 0.5, 0.1, 0.2)]
    assert np.allclose(map_boxes(box, (1, 0, 0, 0, 1, 0))[0][1:], box[0][1:])
    assert np.allclose(map_boxes(box, (-1, 0, 1, 0, 1, 0))[0][1:], (0.75, 0.5, 0.1, 0.2))


def test_verification_accepts_a_cropped_copy_and_carries_its_boxes(clean_root):
    src = clean_root / "images/train/train_00010.jpg"
    boxes = _boxes(clean_root / "labels/train/train_00010.txt")
    data, moved = near_copy(src.read_bytes(), boxes, "crop", np.random.default_rng(1), crop_max=0.04)
    gray_a = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
    gray_b = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    inliers, transform = verify_pair(gray_a, gray_b, mirrored=False, min_inliers=40)
    assert inliers >= 40 and transform is not None
    cmp = compare_labels([tuple(b) for b in boxes], [tuple(b) for b in moved], mirrored=False, iou=0.7,
                         transform=transform)
    assert cmp["same"] == len(boxes), cmp


def test_verification_rejects_unrelated_images(clean_root):
    imgs = sorted((clean_root / "images/train").glob("*.jpg"))[:12]
    grays = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in imgs]
    for a, b in zip(grays, grays[1:], strict=False):
        assert verify_pair(a, b, mirrored=False, min_inliers=40)[0] < 40
        assert verify_pair(a, b, mirrored=True, min_inliers=40)[0] < 40


def test_flipped_copy_is_blamed_and_its_source_only_involved(dataset, screen):
    src, dst = "train_00020", "train_00021"
    (dataset / f"images/train/{dst}.jpg").write_bytes((dataset / f"images/train/{src}.jpg").read_bytes())
    _write_label(dataset / f"labels/train/{dst}.txt",
                 [(1 - c, *rest) for c, *rest in _boxes(dataset / f"labels/train/{src}.txt")])
    s = screen(dataset)
    conflicts = [f for f in s.findings if f["check"] == "duplicate_label_conflict"]
    assert len(conflicts) == 1
    assert conflicts[0]["suspects"] == [f"train/{dst}"]
    assert conflicts[0]["involved"] == [f"train/{src}", f"train/{dst}"]
    assert conflicts[0]["evidence"]["pairs"][0]["kind"] == "exact"


def test_conflict_without_content_evidence_blames_both(dataset, screen):
    src, dst = "train_00030", "train_00031"
    (dataset / f"images/train/{dst}.jpg").write_bytes((dataset / f"images/train/{src}.jpg").read_bytes())
    _write_label(dataset / f"labels/train/{dst}.txt", [])  # every box removed: nothing looks wrong in itself
    s = screen(dataset)
    assert s.suspects("duplicate_label_conflict") == {f"train/{src}", f"train/{dst}"}


def test_mirrored_leak_with_consistent_boxes_is_leakage_not_conflict(dataset, screen):
    src, dst = "train_00040", "val_00003"
    img = cv2.imread(str(dataset / f"images/train/{src}.jpg"))
    ok, buf = cv2.imencode(".jpg", img[:, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    (dataset / f"images/val/{dst}.jpg").write_bytes(buf.tobytes())
    _write_label(dataset / f"labels/val/{dst}.txt",
                 [(c, 1 - cx, cy, w, h) for c, cx, cy, w, h in _boxes(dataset / f"labels/train/{src}.txt")])
    s = screen(dataset)
    leaks = [f for f in s.findings if f["check"] == "split_leakage"]
    assert len(leaks) == 1 and leaks[0]["suspects"] == [f"val/{dst}"]
    assert leaks[0]["evidence"]["pairs"][0]["mirrored"] is True
    assert not s.suspects("duplicate_label_conflict")


def test_plain_duplicate_is_a_warning_about_the_redundant_copy(dataset, screen):
    src, dst = "train_00050", "train_00051"
    (dataset / f"images/train/{dst}.jpg").write_bytes((dataset / f"images/train/{src}.jpg").read_bytes())
    (dataset / f"labels/train/{dst}.txt").write_text((dataset / f"labels/train/{src}.txt").read_text())
    s = screen(dataset)
    dups = [f for f in s.findings if f["check"] == "duplicate"]
    assert len(dups) == 1 and dups[0]["suspects"] == [f"train/{dst}"] and dups[0]["action"] == "warn"
    assert s.result.counts["quarantined"] == 0


def test_orb_verification_survives_degenerate_images():
    """Found by the bad-input corpus under the scheduler: a 1x1 / 4-pixel-high image near-duplicate
    candidate made OpenCV's ORB pyramid assert (resize inv_scale_x > 0) and crashed the whole stage."""
    import numpy as np

    from secure_data.poisoning.duplicates import verify_pair

    normal = (np.random.default_rng(0).random((160, 160)) * 255).astype(np.uint8)
    for tiny in (np.zeros((1, 1), np.uint8), np.zeros((4, 300), np.uint8), np.zeros((31, 31), np.uint8)):
        assert verify_pair(normal, tiny, mirrored=False, min_inliers=8) == (0, None)
        assert verify_pair(tiny, normal, mirrored=True, min_inliers=8) == (0, None)
