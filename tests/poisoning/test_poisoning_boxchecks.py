"""Per-class robust box statistics and box-content fit, one planted defect at a time."""

from __future__ import annotations

import pytest

from secure_data.poisoning.boxchecks import robust_z


def test_robust_z_ignores_the_outliers_it_measures():
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 50.0]
    z = robust_z(values)
    assert abs(z[0]) < 1 and z[-1] > 100  # the 50 does not inflate its own yardstick
    assert robust_z([2.0] * 5) == [0.0] * 5
    assert robust_z([1.0, 1.0, 1.0, 1.0, 9.0])[-1] > 3  # MAD = 0: mean-absolute-deviation fallback


def _rewrite(path, fn):
    rows = [line.split() for line in path.read_text().splitlines()]
    path.write_text("".join(" ".join(r) + "\n" for r in fn(rows)))


def test_absurd_box_shape_is_an_outlier_warning(dataset, screen):
    # a plate box 1/4 as wide and 3x as tall as drawn: aspect ~0.25 where plates are ~3
    label = dataset / "labels/train/train_00007.txt"
    rows = [line.split() for line in label.read_text().splitlines()]
    assert any(r[0] == "1" for r in rows), "fixture image has no plate"
    _rewrite(label, lambda rows: [[r[0], r[1], r[2], f"{float(r[3]) / 4:.6f}", f"{min(0.9, float(r[4]) * 3):.6f}"]
                                  if r[0] == "1" else r for r in rows])
    s = screen(dataset)
    outliers = [f for f in s.findings if f["check"] == "box_outlier"]
    assert [f["suspects"] for f in outliers] == [["train/train_00007"]]
    measures = {o["measure"] for o in outliers[0]["evidence"]["outliers"]}
    assert "log_aspect" in measures and all(abs(o["z"]) > 6 for o in outliers[0]["evidence"]["outliers"])
    assert outliers[0]["action"] == "warn"


@pytest.mark.parametrize("stem", ["train_00012", "train_00013"])
def test_relabelled_object_is_class_confusion_with_the_right_class(dataset, screen, stem):
    label = dataset / f"labels/train/{stem}.txt"
    original = [line.split()[0] for line in label.read_text().splitlines()]
    _rewrite(label, lambda rows: [["1" if r[0] == "0" else "0", *r[1:]] for r in rows])
    s = screen(dataset)
    conf = [f for f in s.findings if f["check"] == "class_confusion"]
    assert [f["suspects"] for f in conf] == [[f"train/{stem}"]]
    boxes = conf[0]["evidence"]["boxes"]
    assert len(boxes) == len(original)
    names = {"0": "face", "1": "plate"}
    assert sorted(b["better_cls_name"] for b in boxes) == sorted(names[c] for c in original)
    assert all(b["fit_better_cls"] - b["fit_own_class"] >= 0.15 for b in boxes)
    assert conf[0]["action"] == "quarantine" and s.result.extra["quarantined_samples"] == 1


def test_shifted_box_is_misaligned_and_points_back_to_its_object(dataset, screen):
    label = dataset / "labels/train/train_00017.txt"
    rows = [line.split() for line in label.read_text().splitlines()]
    c, cx, cy, w, h = rows[0][0], *map(float, rows[0][1:])
    new_cx = cx + 0.7 * w if cx + 0.7 * w + w / 2 <= 1 else cx - 0.7 * w
    rows[0] = [c, f"{new_cx:.6f}", f"{cy:.6f}", f"{w:.6f}", f"{h:.6f}"]
    label.write_text("".join(" ".join(r) + "\n" for r in rows))
    s = screen(dataset)
    mis = [f for f in s.findings if f["check"] == "box_misaligned"]
    assert [f["suspects"] for f in mis] == [["train/train_00017"]]
    box = mis[0]["evidence"]["boxes"][0]
    assert box["box"] == 0
    dx = box["best_offset_boxes"][0]
    assert abs(dx + (new_cx - cx) / w) <= 0.2  # the best fit is where the object really is
