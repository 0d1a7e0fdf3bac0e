"""Box-level checks: robust per-class statistics and box-content fit.

``box_outlier``: per class, the modified z-score (Iglewicz & Hoaglin:
0.6745 * |x - median| / MAD) of log box area, log aspect ratio (in pixels) and the
number of boxes of that class per image. Median and MAD ignore up to half the
data being wrong, so the poison cannot hide by shifting the mean. They are weighted
so that one image counts at most ``stats_boxes_per_image`` boxes: one label file with
thousands of boxes cannot become the distribution (it is flagged on its box count).

``box_misaligned`` and ``class_confusion`` use the per-box template fits computed
in :mod:`secure_data.poisoning.features`: every class has a template (the median
gradient-orientation layout of its boxes, in the box's own frame with half a box of context). A
box whose own-class template fits much better a good fraction of a box away was
moved off its object; a box whose content fits another class's template better
than its own was re-classed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.features import SampleFeatures
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.samples import Sample

_MAD_TO_Z = 0.6745
_MEANAD_TO_Z = 0.7979  # IBM's fallback when MAD is 0: 0.7979 * |x - median| / mean absolute deviation
_MAX_LISTED = 50  # outlying statistics listed per sample; the rest are counted (a 10,000-box file)


def weighted_median(values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Median where each value counts ``weight`` times; equal weights give exactly ``np.median``."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return 0.0
    if weights is None:
        return float(np.median(x))
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs, cum = x[order], np.cumsum(w[order])
    half = cum[-1] / 2
    k = min(int(np.searchsorted(cum, half)), x.size - 1)  # first value whose cumulative weight reaches half
    if k + 1 < x.size and math.isclose(cum[k], half, rel_tol=1e-12):
        return float((xs[k] + xs[k + 1]) / 2)  # the half falls exactly between two values, as np.median
    return float(xs[k])


def robust_z(
    values: Sequence[float], weights: Sequence[float] | None = None, *, min_mad: float = 0.0
) -> list[float]:
    """Modified z-scores; 0 for everything when the data has no spread at all.

    ``weights``: how much each value counts in the median and MAD (the z-scores are still
    given for every value). ``min_mad``: a floor for the MAD, for data with a natural
    resolution (box counts: one box); with it, the mean-deviation fallback, which the
    outliers themselves inflate, is never needed.
    """
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return []
    med = weighted_median(x, weights)
    dev = np.abs(x - med)
    mad = max(weighted_median(dev, weights), min_mad)
    if mad > 0:
        return (_MAD_TO_Z * (x - med) / mad).tolist()
    mean_ad = float(np.average(dev, weights=weights))
    if mean_ad > 0:
        return (_MEANAD_TO_Z * (x - med) / mean_ad).tolist()
    return [0.0] * int(x.size)


def _box_measures(sample: Sample) -> list[tuple[int, int, float, float]]:
    """(box index, cls, log area, log pixel aspect) for every box with a positive size."""
    width, height = sample.width or 1, sample.height or 1
    out = []
    for i, (cls, _, _, w, h) in enumerate(sample.boxes):
        if w <= 0 or h <= 0:
            continue
        out.append((i, cls, math.log(w * h), math.log((w * width) / (h * height))))
    return out


def check_box_outliers(samples: Sequence[Sample], config: PoisoningConfig) -> list[Finding]:
    """``box_outlier`` findings, one per sample with any outlying statistic.

    The reference of a class is a weighted median/MAD in which one image weighs at most
    ``stats_boxes_per_image`` boxes (each of its n boxes of the class counts min(1, cap / n)):
    ordinary images count box for box, and a label file with thousands of boxes cannot become
    the distribution every clean box is measured against. Its box count is judged on its own:
    per class against the other images' counts (one value per image), and against the absolute
    ``max_boxes_per_image``.
    """
    cap = config.stats_boxes_per_image
    per_class: dict[int, list[tuple[str, int, float, float]]] = {}
    counts: dict[int, dict[str, int]] = {}
    hits: dict[str, list[dict]] = {}
    for s in samples:
        if len(s.boxes) > config.max_boxes_per_image:
            hits.setdefault(s.key, []).append({
                "box": None, "cls": None, "measure": "boxes_total", "value": len(s.boxes),
                "limit": config.max_boxes_per_image, "class_median": None, "z": None,
            })
        for i, cls, area, aspect in _box_measures(s):
            per_class.setdefault(cls, []).append((s.key, i, area, aspect))
            counts.setdefault(cls, {}).setdefault(s.key, 0)
            counts[cls][s.key] += 1
    for cls, rows in sorted(per_class.items()):
        weights = [min(1.0, cap / counts[cls][r[0]]) for r in rows]
        # the boxes as they enter the statistics: sum over images of min(n, cap)
        if sum(weights) < config.min_class_boxes:
            continue
        for measure, column in (("log_area", 2), ("log_aspect", 3)):
            values = [r[column] for r in rows]
            zs = robust_z(values, weights)
            med = weighted_median(values, weights)
            for row, z in zip(rows, zs, strict=True):
                if abs(z) > config.outlier_z:
                    hits.setdefault(row[0], []).append({
                        "box": row[1], "cls": cls, "measure": measure, "value": row[column],
                        "class_median": med, "z": z,
                    })
        keys = sorted(counts[cls])
        per_image = [counts[cls][k] for k in keys]
        med = weighted_median(per_image)
        # Counts have a resolution of one box: with most images at the median count the MAD is 0,
        # and the mean-deviation fallback would be inflated by the very files it should flag.
        for key, value, z in zip(keys, per_image, robust_z(per_image, min_mad=1.0), strict=True):
            if abs(z) > config.outlier_z:
                hits.setdefault(key, []).append({
                    "box": None, "cls": cls, "measure": "boxes_per_image", "value": value,
                    "class_median": med, "z": z,
                })
    findings = []
    for key, rows in sorted(hits.items()):
        rows.sort(key=lambda r: r["box"] is not None)  # image-level statistics first: never cut off
        findings.append(make_finding(
            "box_outlier", suspects=[key],
            evidence={"outliers": rows[:_MAX_LISTED], "n_outliers": len(rows),
                      "omitted": max(0, len(rows) - _MAX_LISTED), "threshold_z": config.outlier_z},
            message=(f"{rows[0]['value']} boxes in one image (limit {config.max_boxes_per_image}); "
                     if rows[0]["measure"] == "boxes_total" else "")
            + f"{len(rows)} box statistic(s) beyond |z| > {config.outlier_z} for their class",
        ))
    return findings


def check_box_fits(
    samples: Sequence[Sample], feats: Sequence[SampleFeatures], config: PoisoningConfig,
    class_names: Mapping[int, str] | None = None,
) -> list[Finding]:
    """``box_misaligned`` and ``class_confusion`` findings, one per sample and check."""
    names = class_names or {}
    findings: list[Finding] = []
    for sample, feat in zip(samples, feats, strict=True):
        misaligned, confused = [], []
        for fit in feat.fits:
            needed = config.misalign_gain_near if fit.offset <= config.misalign_near else config.misalign_gain
            if fit.best - fit.own >= needed and fit.offset >= config.misalign_offset:
                misaligned.append({
                    "box": fit.index, "cls": fit.cls, "fit_here": fit.own, "fit_best": fit.best,
                    "best_offset_boxes": [round(fit.dx, 3), round(fit.dy, 3)],
                })
            if fit.other is not None and fit.other - fit.own >= config.confusion_margin:
                confused.append({
                    "box": fit.index, "cls": fit.cls, "cls_name": names.get(fit.cls, str(fit.cls)),
                    "fit_own_class": fit.own, "better_cls": fit.other_cls,
                    "better_cls_name": names.get(fit.other_cls, str(fit.other_cls)), "fit_better_cls": fit.other,
                })
        if misaligned:
            findings.append(make_finding(
                "box_misaligned", suspects=[sample.key],
                evidence={"boxes": misaligned, "gain_threshold": config.misalign_gain,
                          "gain_threshold_near": config.misalign_gain_near, "near_boxes": config.misalign_near,
                          "offset_threshold": config.misalign_offset},
                message=f"{len(misaligned)} box(es) fit their class much better elsewhere (shifted labels)",
            ))
        if confused:
            findings.append(make_finding(
                "class_confusion", suspects=[sample.key],
                evidence={"boxes": confused, "margin": config.confusion_margin},
                message=f"{len(confused)} box(es) look more like another class than their own (flipped class)",
            ))
    return findings
