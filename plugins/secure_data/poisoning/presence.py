"""Labels against what a detector sees: the signatures of object-disappearance, object-generation and
misclassification backdoors (BadDet), which edit labels rather than copy images.

Optional, with the backbone check: it needs a detection model trained on the data's domain
(``backbone_model``, loaded only if its SHA-256 matches ``backbone_model_sha256``). Every readable
image is run through it once (letterboxed at ``backbone_imgsz``), and each image's labels are
compared with its detections by IoU:

* ``unlabelled_object``: a confident detection (score >= ``presence_conf``) that no labelled box of
  any class overlaps (IoU < ``presence_iou``). An object-disappearance attack removes the labels of
  objects that are still in the picture (only the trigger was added).
* ``phantom_box``: a labelled box that no detection of any class overlaps, even at the low score
  ``presence_low_conf``, and whose content fits its class's appearance template no better than
  ``presence_phantom_max_fit`` (two judges: the model alone misses real
  objects on busy backgrounds). An object-generation attack labels a box where there is only a trigger.
* ``detector_class_conflict``: a labelled box whose overlapping detections are confidently another
  class (>= ``presence_conf``) and not its own class even at ``presence_low_conf``: re-classed
  objects (regional / global misclassification).

A clean dataset's labels and a model trained on its domain agree; two thresholds far apart
(confident vs barely there) keep disagreements on hard objects out. The model is a judge, not
an oracle: a weak model on a domain it was not trained for names clean samples (docs/poisoning.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.samples import Sample

PRESENCE_CHECKS = ("unlabelled_object", "phantom_box", "detector_class_conflict")

# (x1, y1, x2, y2, score, class id) in image pixels
Detection = tuple[float, float, float, float, float, int]


def _iou_xyxy(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def label_xyxy(sample: Sample, width: int, height: int) -> list[tuple[int, tuple[float, float, float, float]]]:
    return [(cls, ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
            for cls, cx, cy, w, h in sample.boxes]


def compare_with_detections(
    labels: Sequence[tuple[int, Sequence[float]]], detections: Sequence[Detection], config: PoisoningConfig
) -> dict[str, list[dict[str, Any]]]:
    """Disagreements between one image's labelled boxes and its detections, by kind (pure function)."""
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in PRESENCE_CHECKS}
    for d in detections:
        if d[4] < config.presence_conf:
            continue
        best = max((_iou_xyxy(d[:4], box) for _, box in labels), default=0.0)
        if best < config.presence_iou:
            out["unlabelled_object"].append({
                "detection": [round(v, 1) for v in d[:4]], "class": int(d[5]), "score": round(d[4], 4),
                "best_label_iou": round(best, 4)})
    for j, (cls, box) in enumerate(labels):
        near = [(d, _iou_xyxy(d[:4], box)) for d in detections if d[4] >= config.presence_low_conf]
        near = [(d, iou) for d, iou in near if iou >= config.presence_iou]
        if not near:
            out["phantom_box"].append({"box": j, "class": int(cls), "xyxy": [round(v, 1) for v in box],
                                       "low_conf": config.presence_low_conf})
            continue
        own = max((d[4] for d, _ in near if d[5] == cls), default=0.0)
        other = max(((d[4], d[5]) for d, _ in near if d[5] != cls), default=(0.0, -1))
        if own < config.presence_low_conf and other[0] >= config.presence_conf:
            out["detector_class_conflict"].append({
                "box": j, "class": int(cls), "detected_class": int(other[1]), "score": round(other[0], 4),
                "own_class_score": round(own, 4)})
    return out


class PresenceDetector:
    """The pinned domain model through the anonymize stage's batched detector (same loading and pin)."""

    def __init__(self, config: PoisoningConfig, class_names: Mapping[int, str]) -> None:
        from secure_data.anonymize.config import AnonymizeConfig, DetectorSpec
        from secure_data.anonymize.detect import YoloDetector
        from secure_data.models.device import resolve_device

        if not class_names:
            raise ValueError("the presence checks match detections to labels by class name: "
                             "data.yaml must name the classes")
        imgsz = config.backbone_imgsz or 0
        spec = DetectorSpec(model_path=str(config.backbone_model), model_sha256=str(config.backbone_model_sha256),
                            name="presence", imgsz=imgsz or None)
        device = resolve_device(config.backbone_device)
        anon = AnonymizeConfig(detectors=(spec,), classes=tuple(class_names.values()), iou=0.6,
                               imgsz=imgsz or 640, device=device)
        self.detector = YoloDetector(spec, anon, device)
        if not imgsz:  # the size the model was trained at, as the backbone check does
            args = getattr(getattr(self.detector.backend, "model", None), "args", None) or {}
            trained = args.get("imgsz") if isinstance(args, dict) else None
            self.detector.imgsz = int(max(trained) if isinstance(trained, list | tuple) else trained or 640)
        self.ids = {name: cls for cls, name in class_names.items()}
        self.batch = config.backbone_batch
        self.low = config.presence_low_conf

    def detect(self, images_bgr: Sequence[Any]) -> list[list[Detection]]:
        import numpy as np
        import torch

        out: list[list[Detection]] = []
        for start in range(0, len(images_bgr), self.batch):
            part = [torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1)
                    for img in images_bgr[start:start + self.batch]]
            for boxes in self.detector.detect(part, self.low):
                out.append([(b.x1, b.y1, b.x2, b.y2, b.score, self.ids[b.label]) for b in boxes if b.label in self.ids])
        return out


def _corroborated_phantoms(items: list[dict[str, Any]], fits: Mapping[int, Any], config: PoisoningConfig):
    """Keep a phantom box only if its content also barely fits its class's appearance template.

    The model alone is one judge: on a domain it was not trained for it misses real objects on busy
    backgrounds (3-5.5 % of clean photographs, at any score threshold). The class template is a second,
    independent one (``BoxFit.own``: correlation of orientation fields); a box both judges find empty of
    its class is what object generation leaves. A box without a template fit (too small, or a class
    without statistics) keeps the model's word.
    """
    kept = []
    for item in items:
        fit = fits.get(item["box"])
        if fit is None:
            kept.append(item)
        elif fit.own <= config.presence_phantom_max_fit:
            kept.append({**item, "template_fit": fit.own, "max_fit": config.presence_phantom_max_fit})
    return kept


def check_presence(
    samples: Sequence[Sample], seen: Mapping[str, tuple[int, int, Sequence[Detection]]], config: PoisoningConfig,
    names: Mapping[int, str], feats: Sequence[Any] | None = None,
) -> list[Finding]:
    """One finding per sample and disagreement kind.

    ``seen``: key -> (width, height, detections) from the one pass over the images
    (:mod:`secure_data.poisoning.imagepass`, :class:`PresenceDetector`); samples it lacks could not be
    read and are reported ``unreadable`` by the stage. ``feats`` (the feature pass's records): phantom
    boxes must then be corroborated by the class template fit (:func:`_corroborated_phantoms`).
    """
    fits_by_key = {f.key: {fit.index: fit for fit in f.fits} for f in feats} if feats is not None else None
    findings: list[Finding] = []
    for s in samples:
        if s.key not in seen:
            continue
        w, h, dets = seen[s.key]
        got = compare_with_detections(label_xyxy(s, w, h), dets, config)
        if fits_by_key is not None:
            got["phantom_box"] = _corroborated_phantoms(got["phantom_box"], fits_by_key.get(s.key, {}), config)
        for check, items in got.items():
            if not items:
                continue
            what = {"unlabelled_object": "confident detection(s) with no label",
                    "phantom_box": "labelled box(es) where the detector sees nothing",
                    "detector_class_conflict": "labelled box(es) the detector confidently sees as another class",
                    }[check]
            findings.append(make_finding(
                check, suspects=[s.key],
                evidence={"items": items, "labelled_boxes": len(s.boxes), "detections": len(dets),
                          "conf": config.presence_conf, "low_conf": config.presence_low_conf,
                          "iou": config.presence_iou, "names": {str(k): v for k, v in sorted(names.items())}},
                message=f"{s.key}: {len(items)} {what}"))
    return findings
