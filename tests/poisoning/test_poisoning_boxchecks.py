"""Per-class robust box statistics and box-content fit, one planted defect at a time."""

from __future__ import annotations

import numpy as np
import pytest

from secure_data.dataset.manifest import FileRecord
from secure_data.poisoning import PoisoningConfig
from secure_data.poisoning.boxchecks import check_box_outliers, robust_z, weighted_median
from secure_data.poisoning.samples import Sample
from secure_data.poisoning.stage import _template_sample


def test_robust_z_ignores_the_outliers_it_measures():
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 50.0]
    z = robust_z(values)
    assert abs(z[0]) < 1 and z[-1] > 100  # the 50 does not inflate its own yardstick
    assert robust_z([2.0] * 5) == [0.0] * 5
    assert robust_z([1.0, 1.0, 1.0, 1.0, 9.0])[-1] > 3  # MAD = 0: mean-absolute-deviation fallback


def test_weighted_median_is_np_median_for_equal_weights_and_follows_the_weights():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 10):
        x = rng.normal(size=n).tolist()
        assert weighted_median(x, [1.0] * n) == pytest.approx(float(np.median(x)), abs=1e-12)
    # 1,000 copies of -10 at weight 1/1000 together weigh one value: they do not move the median to -10
    assert weighted_median([1.0, 2.0, 3.0] + [-10.0] * 1000, [1.0] * 3 + [1e-3] * 1000) == pytest.approx(1.5)
    z = robust_z([1.0, 1.1, 0.9, 1.05, 0.95] + [-10.0] * 1000, [1.0] * 5 + [1e-3] * 1000)
    assert max(abs(v) for v in z[:5]) < 3 and min(z[5:]) < -6


def test_count_floor_keeps_two_huge_files_from_hiding_each_other():
    counts = [1] * 8 + [2] * 3 + [5000, 5000]
    assert robust_z(counts)[-1] < 6  # MAD 0: the mean-deviation fallback is inflated by the two files
    z = robust_z(counts, min_mad=1.0)
    assert z[-1] > 6 and z[-2] > 6 and max(abs(v) for v in z[:-2]) < 1


def _sample(key: str, boxes, size=(160, 160)) -> Sample:
    image = FileRecord(path=f"images/{key}.jpg", sha256="0" * 64, size=1, kind="image", split=key.split("/")[0],
                       sample=key, meta={"width": size[0], "height": size[1]})
    return Sample(key=key, split=image.split, image=image, label=None, boxes=tuple(boxes))


def _clean_samples(n: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            side = float(rng.uniform(0.17, 0.33))
            boxes.append((0, 0.5, 0.5, side, side * float(rng.uniform(1.1, 1.4))))
        out.append(_sample(f"train/clean_{i:03d}", boxes))
    return out


@pytest.mark.parametrize("n_bad", [1, 2])
def test_label_files_with_thousands_of_boxes_are_flagged_and_do_not_set_the_reference(n_bad):
    clean = _clean_samples(30)
    bad = [_sample(f"train/bad_{i}", [(0, 0.3, 0.3, 0.01, 0.01)] * 5000) for i in range(n_bad)]
    findings = check_box_outliers(clean + bad, PoisoningConfig())
    assert sorted(k for f in findings for k in f.suspects) == [s.key for s in bad]
    evidence = findings[0].evidence
    measures = {o["measure"] for o in evidence["outliers"]}
    assert {"boxes_total", "boxes_per_image", "log_area"} <= measures
    # every outlying box is counted, not every one listed (the evidence stays small)
    assert evidence["n_outliers"] > 5000 and len(evidence["outliers"]) == 50
    assert evidence["omitted"] == evidence["n_outliers"] - 50
    assert "5000 boxes in one image" in findings[0].message


def test_without_the_cap_one_file_sets_the_reference():
    """The cap is what protects the clean samples: weigh every box (cap above any count) and the
    10,000-box file is the distribution again (the defect this guards against)."""
    clean = _clean_samples(30)
    bad = [_sample("train/bad_0", [(0, 0.3, 0.3, 0.01, 0.01)] * 5000)]
    findings = check_box_outliers(clean + bad, PoisoningConfig(stats_boxes_per_image=10**6))
    assert len({k for f in findings for k in f.suspects}) > 20


def test_class_statistics_need_enough_boxes_as_they_enter_them():
    # 4 clean images + one 5,000-box file: 5,000 boxes, but only 4 x 1-2 + 4 enter the statistics
    clean = _clean_samples(4)
    bad = _sample("train/bad_0", [(0, 0.3, 0.3, 0.01, 0.01)] * 5000)
    findings = check_box_outliers([*clean, bad], PoisoningConfig())
    assert [(f.suspects, [o["measure"] for o in f.evidence["outliers"]]) for f in findings] == [
        (("train/bad_0",), ["boxes_total"])]  # only the absolute limit speaks


def test_template_sample_takes_a_few_boxes_from_a_many_box_file():
    config = PoisoningConfig(template_sample=25)
    samples = _clean_samples(30)
    first = int(np.random.default_rng(config.seed).permutation(31)[0])  # the sample the draw visits first
    bad = _sample("train/bad_0", [(0, 0.3, 0.3, 0.2, 0.25)] * 10_000)
    samples.insert(first, bad)
    chosen = [samples[i] for i in _template_sample(samples, config)]
    assert chosen[0] is bad  # visited first: uncapped, its 10,000 boxes would have been the whole sample
    assert sum(len(s.boxes) for s in chosen[1:]) >= config.template_sample - config.stats_boxes_per_image


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
