"""Distribution drift against a reference manifest, with Great Expectations' KL-divergence expectation.

The reference is the manifest of a dataset you trust (an earlier accepted run).
Four kinds of distribution are compared, each as one
``ExpectColumnKLDivergenceToBeLessThan`` with the reference as partition object:

* class balance (categorical: share of boxes per class);
* boxes per image (categorical);
* per class with enough boxes in both: log box area and log pixel aspect ratio
  (continuous: bins at the reference deciles, 1 % tail weight held out so a value
  outside the reference range costs a finite amount).

GX 1.x ships no working chi-square expectation (``ExpectColumnChiSquareTest...``
raises NotImplementedError), so the chi-square p-value of the class balance is
added to the evidence with SciPy. A drift is a property of the whole set: the
finding names the samples in the most over-represented class or bin as involved,
and blames none (policy ``warn`` or ``fail``; quarantine makes no sense here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.samples import Sample

_MAX_NAMED = 100
_TAIL_HOLDOUT = 0.01


@dataclass(frozen=True)
class BoxRow:
    sample: str
    cls: str
    log_area: float
    log_aspect: float


def _rows(samples: Sequence[Sample], names: Mapping[int, str]) -> tuple[list[BoxRow], list[tuple[str, int]]]:
    boxes, images = [], []
    for s in samples:
        images.append((s.key, len(s.boxes)))
        width, height = s.width or 1, s.height or 1
        for cls, _, _, w, h in s.boxes:
            if w > 0 and h > 0:
                boxes.append(BoxRow(s.key, names.get(cls, str(cls)), math.log(w * h),
                                    math.log((w * width) / (h * height))))
    return boxes, images


def _categorical(values: Sequence[str]) -> dict:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    total = sum(counts.values())
    keys = sorted(counts)
    return {"values": keys, "weights": [counts[k] / total for k in keys]}


def _continuous(values: Sequence[float], bins: int) -> dict | None:
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return None  # (nearly) constant: nothing to compare
    hist, _ = np.histogram(x, edges)
    return {"bins": edges.tolist(), "weights": (hist / hist.sum()).tolist()}


def check_drift(
    samples: Sequence[Sample],
    reference: Sequence[Sample],
    config: PoisoningConfig,
    class_names: Mapping[int, str] | None = None,
) -> tuple[list[Finding], list[dict]]:
    """Run the GX suite; return (findings for failed expectations, every expectation's result)."""
    import great_expectations as gx
    import pandas as pd

    names = class_names or {}
    cur_boxes, cur_images = _rows(samples, names)
    ref_boxes, ref_images = _rows(reference, names)
    if not cur_boxes or not ref_boxes:
        return [], []

    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas("poisoning_drift")
    box_df = pd.DataFrame([r.__dict__ for r in cur_boxes])
    img_df = pd.DataFrame({"sample": [k for k, _ in cur_images], "n_boxes": [str(n) for _, n in cur_images]})

    def batch(name: str, frame):
        asset = source.add_dataframe_asset(name)
        return asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})

    box_batch, img_batch = batch("boxes", box_df), batch("images", img_df)
    kl = gx.expectations.ExpectColumnKLDivergenceToBeLessThan
    jobs = [
        ("class_balance", box_batch, box_df, "cls",
         kl(column="cls", partition_object=_categorical([r.cls for r in ref_boxes]),
            threshold=config.drift_kl_threshold, tail_weight_holdout=_TAIL_HOLDOUT)),
        ("boxes_per_image", img_batch, img_df, "n_boxes",
         kl(column="n_boxes", partition_object=_categorical([str(n) for _, n in ref_images]),
            threshold=config.drift_kl_threshold, tail_weight_holdout=_TAIL_HOLDOUT)),
    ]
    cur_classes = {r.cls for r in cur_boxes}
    for cls in sorted({r.cls for r in ref_boxes} & cur_classes):
        ref_cls = [r for r in ref_boxes if r.cls == cls]
        n_cur = sum(1 for r in cur_boxes if r.cls == cls)
        if len(ref_cls) < config.min_class_boxes or n_cur < config.min_class_boxes:
            continue
        sub = box_df[box_df["cls"] == cls].reset_index(drop=True)
        sub_batch = batch(f"boxes_{len(jobs)}", sub)
        for column in ("log_area", "log_aspect"):
            part = _continuous([getattr(r, column) for r in ref_cls], config.drift_bins)
            if part is None:
                continue
            jobs.append((f"{column}[{cls}]", sub_batch, sub, column,
                         kl(column=column, partition_object=part, threshold=config.drift_kl_threshold,
                            tail_weight_holdout=_TAIL_HOLDOUT)))
    results, findings = [], []
    for name, gx_batch, frame, column, expectation in jobs:
        res = gx_batch.validate(expectation)
        observed = res.result.get("observed_value")
        doc = {
            "distribution": name,
            "expectation": "expect_column_kl_divergence_to_be_less_than",
            "success": bool(res.success),
            "kl_divergence": None if observed is None else float(observed),
            "threshold": config.drift_kl_threshold,
            "details": res.result.get("details", {}),
        }
        if name == "class_balance":
            doc["chi_square"] = _chi_square([r.cls for r in cur_boxes], [r.cls for r in ref_boxes])
        results.append(doc)
        if not res.success:
            involved, bucket = _over_represented(frame, column, expectation.partition_object)
            findings.append(make_finding(
                "distribution_drift", suspects=(), involved=involved[:_MAX_NAMED],
                evidence={**doc, "over_represented": bucket, "involved_total": len(involved)},
                message=f"{name}: KL divergence {doc['kl_divergence']} >= {config.drift_kl_threshold} "
                        f"against the reference; most over-represented: {bucket}",
            ))
    return findings, results


def _over_represented(frame, column: str, partition: Mapping) -> tuple[list[str], str]:
    """Samples in the class / bin whose share grew the most against the reference."""
    import numpy as np

    values = frame[column]
    if "values" in partition:
        ref = dict(zip(partition["values"], partition["weights"], strict=True))
        share = values.value_counts(normalize=True)
        bucket = max(share.index, key=lambda v: (share[v] - ref.get(v, 0.0), str(v)))
        mask = values == bucket
        label = str(bucket)
    else:
        edges = np.asarray(partition["bins"])
        idx = np.clip(np.searchsorted(edges, values.to_numpy(), side="right") - 1, -1, len(edges) - 1)
        ref_w = np.concatenate([[0.0], partition["weights"], [0.0]])
        cur_w = np.bincount(idx + 1, minlength=len(ref_w)) / len(idx)
        best = int(np.argmax(cur_w - ref_w))
        mask = (idx + 1) == best
        lo = "-inf" if best == 0 else f"{edges[best - 1]:.3f}"
        hi = "+inf" if best >= len(edges) else f"{edges[best]:.3f}"
        label = f"[{lo}, {hi})"
    return sorted(set(frame.loc[mask, "sample"].tolist())), label


def _chi_square(current: Sequence[str], reference: Sequence[str]) -> dict:
    from scipy.stats import chi2_contingency

    classes = sorted(set(current) | set(reference))
    table = [[sum(1 for c in current if c == k) for k in classes], [sum(1 for c in reference if c == k) for k in classes]]
    if len(classes) < 2:
        return {"p_value": 1.0, "statistic": 0.0}
    stat, p, dof, _ = chi2_contingency(table)
    return {"p_value": float(p), "statistic": float(stat), "dof": int(dof), "classes": classes}
