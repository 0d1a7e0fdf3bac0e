"""Box-level checks: robust per-class statistics and box-content fit.

``box_outlier``: per class, the modified z-score (Iglewicz & Hoaglin:
0.6745 * |x - median| / MAD) of log box area, log aspect ratio (in pixels) and the
number of boxes of that class per image. Median and MAD ignore up to half the
data being wrong, so the poison cannot hide by shifting the mean.

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


def robust_z(values: Sequence[float]) -> list[float]:
    """Modified z-scores; 0 for everything when the data has no spread at all."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return []
    med = float(np.median(x))
    dev = np.abs(x - med)
    mad = float(np.median(dev))
    if mad > 0:
        return (_MAD_TO_Z * (x - med) / mad).tolist()
    mean_ad = float(dev.mean())
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
    per_class: dict[int, list[tuple[str, int, float, float]]] = {}
    counts: dict[int, dict[str, int]] = {}
    for s in samples:
        for i, cls, area, aspect in _box_measures(s):
            per_class.setdefault(cls, []).append((s.key, i, area, aspect))
            counts.setdefault(cls, {}).setdefault(s.key, 0)
            counts[cls][s.key] += 1
    hits: dict[str, list[dict]] = {}
    for cls, rows in sorted(per_class.items()):
        if len(rows) < config.min_class_boxes:
            continue
        for measure, column in (("log_area", 2), ("log_aspect", 3)):
            values = [r[column] for r in rows]
            zs = robust_z(values)
            med = _median(values)
            for row, z in zip(rows, zs, strict=True):
                if abs(z) > config.outlier_z:
                    hits.setdefault(row[0], []).append({
                        "box": row[1], "cls": cls, "measure": measure, "value": row[column],
                        "class_median": med, "z": z,
                    })
        keys = sorted(counts[cls])
        per_image = [counts[cls][k] for k in keys]
        med = _median(per_image)
        for key, value, z in zip(keys, per_image, robust_z(per_image), strict=True):
            if abs(z) > config.outlier_z:
                hits.setdefault(key, []).append({
                    "box": None, "cls": cls, "measure": "boxes_per_image", "value": value,
                    "class_median": med, "z": z,
                })
    return [
        make_finding(
            "box_outlier", suspects=[key], evidence={"outliers": rows, "threshold_z": config.outlier_z},
            message=f"{len(rows)} box statistic(s) beyond |z| > {config.outlier_z} for their class",
        )
        for key, rows in sorted(hits.items())
    ]


def _median(values: Sequence[float]) -> float:
    import numpy as np

    return float(np.median(np.asarray(values, dtype=np.float64))) if len(values) else 0.0


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
            if fit.best - fit.own >= config.misalign_gain and fit.offset >= config.misalign_offset:
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
