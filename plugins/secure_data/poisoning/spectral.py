"""Backbone feature-space outliers per class: spectral signatures (Tran, Li & Madry, NeurIPS 2018).

Optional and off by default: it needs a detection model trained on the data's domain,
which the operator supplies (``backbone_model``) and pins (``backbone_model_sha256``);
the file is loaded only if its SHA-256 matches (``models.pinned``: a ``.pt`` is a
pickle, i.e. code).

Per labelled box, one feature vector: ``roi_align`` of the box on backbone feature maps
(by default the backbone's last stride-8 and stride-16 layers, captured by forward hooks
on ``model.model[i]``), averaged over the box, each map's part L2-normalised
so that neither map dominates by scale. Per class, the vectors are centred and projected on
their top singular vector; the spectral-signature score is the squared projection. Poisoned
boxes of a class (re-classed objects, boxes moved onto background) differ from the class in
one consistent direction, which the top singular vector picks up once they are a few per
cent of the class. The poison rate is unknown, so nothing is removed by quota: a box is an
outlier when the robust (median/MAD) z-score of its projection exceeds ``feature_outlier_z``;
on clean data that is ~0 boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_data.poisoning.boxchecks import robust_z
from secure_data.poisoning.config import PoisoningConfig
from secure_data.poisoning.findings import Finding, make_finding
from secure_data.poisoning.samples import Sample

CHECK = "feature_outlier"


@dataclass(frozen=True)
class BoxRef:
    """Which labelled box a feature row belongs to."""

    key: str
    index: int  # position of the box in the label file
    cls: int


class Backbone:
    """A pinned Ultralytics detection model whose neck/backbone outputs are read through forward hooks."""

    def __init__(self, config: PoisoningConfig) -> None:
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        from secure_data.models.device import resolve_device
        from secure_data.models.pinned import private_copy, read_pinned

        path = str(config.backbone_model)
        data = read_pinned(path, config.backbone_model_sha256 or "")
        self.device = torch.device(resolve_device(config.backbone_device))
        with private_copy(data, Path(path).suffix.lower()) as copy:
            backend = AutoBackend(str(copy), device=self.device, fp16=False, fuse=True, verbose=False)
        net = getattr(backend, "model", None)
        layers = getattr(net, "model", None)
        if backend.format != "pt" or layers is None or not hasattr(layers[-1], "f"):
            raise ValueError(f"backbone_model {path!r} is not an Ultralytics PyTorch detection model (.pt)")
        self.net = net.eval()
        args = getattr(net, "args", None) or {}
        trained = args.get("imgsz") if isinstance(args, dict) else None
        self.imgsz = config.backbone_imgsz or int(max(trained) if isinstance(trained, list | tuple) else trained or 640)
        self.stride = int(max(int(s) for s in getattr(net, "stride", [32])))
        self.batch = config.backbone_batch
        self._maps: dict[int, Any] = {}
        self.layers = tuple(config.backbone_layers) or self._default_layers(layers)
        for i in self.layers:
            if not 0 <= i < len(layers) - 1:
                raise ValueError(f"backbone_layers: layer {i} not in 0..{len(layers) - 2}")
        self._hooks = [layers[i].register_forward_hook(self._keep(i)) for i in self.layers]

    def _default_layers(self, layers) -> tuple[int, ...]:
        """The backbone's last stride-8 and stride-16 layers (4 and 6 in YOLOv8/11).

        The backbone is everything before the first upsampling (where the neck starts). Its
        features separated re-classed and moved boxes on the benchmark's development seeds; the
        neck outputs the head reads (stride 8/16/32) mix in context and separated less (docs).
        """
        import torch

        first_up = next((i for i, m in enumerate(layers) if isinstance(m, torch.nn.Upsample)), len(layers) - 1)
        hooks = [layers[i].register_forward_hook(self._keep(i)) for i in range(first_up)]
        try:
            with torch.inference_mode():
                self.net(torch.zeros(1, 3, self.imgsz, self.imgsz, device=self.device))
            strides = {i: self.imgsz / out.shape[-1] for i, out in self._maps.items()
                       if hasattr(out, "shape") and len(out.shape) == 4}
        finally:
            for h in hooks:
                h.remove()
            self._maps.clear()
        chosen = tuple(max((i for i, st in strides.items() if st == want), default=-1) for want in (8, 16))
        if min(chosen) < 0:
            raise ValueError("could not find stride-8 and stride-16 backbone layers: set backbone_layers")
        return chosen

    def _keep(self, i: int):
        def hook(_module, _inputs, output) -> None:
            self._maps[i] = output

        return hook

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._maps.clear()

    def box_features(self, images: Sequence[Any], boxes: Sequence[Sequence[tuple[float, float, float, float]]]):
        """Per image (HWC BGR uint8) and its boxes (x1, y1, x2, y2 in image pixels): an (n_boxes, D) array."""
        import numpy as np
        import torch
        from torchvision.ops import roi_align

        from secure_data.models.letterbox import LETTERBOX_FILL, group_by_canvas, letterbox_group

        tensors = [torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1) for img in images]
        out: list[Any] = [None] * len(images)
        # Square canvases (as Ultralytics validates a fixed imgsz): one batch per original image size.
        for (_, canvas, new), idxs in group_by_canvas(tensors, self.imgsz, self.stride, True).items():
            for start in range(0, len(idxs), self.batch):
                part = idxs[start:start + self.batch]
                batch, lb = letterbox_group([tensors[i] for i in part], canvas, new, torch.float32, LETTERBOX_FILL)
                rois = []
                for b, i in enumerate(part):
                    for x1, y1, x2, y2 in boxes[i]:
                        rois.append([b, x1 * lb.ratio_x + lb.pad_x, y1 * lb.ratio_y + lb.pad_y,
                                     x2 * lb.ratio_x + lb.pad_x, y2 * lb.ratio_y + lb.pad_y])
                if not rois:
                    for i in part:
                        out[i] = np.zeros((0, 0), np.float32)
                    continue
                with torch.inference_mode():
                    self._maps.clear()
                    self.net(batch.to(self.device).div_(255.0))
                    roi_t = torch.tensor(rois, dtype=torch.float32, device=self.device)
                    parts = []
                    for layer in self.layers:
                        fmap = self._maps[layer].float()
                        scale = fmap.shape[-1] / canvas[1]
                        pooled = roi_align(fmap, roi_t, output_size=1, spatial_scale=scale, sampling_ratio=2,
                                           aligned=True).flatten(1)
                        parts.append(torch.nn.functional.normalize(pooled, dim=1))
                    feats = torch.cat(parts, 1).cpu().numpy()
                row = 0
                for i in part:
                    n = len(boxes[i])
                    out[i] = feats[row:row + n]
                    row += n
        return out


def box_pixels(sample: Sample, width: int, height: int) -> list[tuple[float, float, float, float]]:
    """The sample's labelled boxes in image pixels (x1, y1, x2, y2)."""
    out = []
    for _, cx, cy, w, h in sample.boxes:
        out.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    return out


def spectral_projection(x):
    """Centre the rows and project them on the top right-singular vector (the spectral signature)."""
    import numpy as np

    centred = x.astype(np.float64) - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[0]


def check_feature_outliers(
    box_features: tuple, config: PoisoningConfig, names: Mapping[int, str] | None = None
) -> list[Finding]:
    """One finding per sample with at least one box that is a spectral-signature outlier of its class.

    ``box_features``: (refs, X, layers), one row per labelled box of every readable sample, from the one
    pass over the images (:mod:`secure_data.poisoning.imagepass`, :meth:`Backbone.box_features`).
    """
    import numpy as np

    names = dict(names or {})
    refs, x, layers = box_features
    findings: list[Finding] = []
    by_sample: dict[str, list[dict[str, Any]]] = {}
    classes = {}
    for cls in sorted({r.cls for r in refs}):
        idx = np.array([i for i, r in enumerate(refs) if r.cls == cls])
        if len(idx) < config.feature_min_class_boxes:
            classes[cls] = {"boxes": int(len(idx)), "skipped": "too few boxes"}
            continue
        proj = spectral_projection(x[idx])
        z = np.asarray(robust_z(proj))
        med = float(np.median(proj))
        classes[cls] = {"boxes": int(len(idx)), "median": med, "mad": float(np.median(np.abs(proj - med)))}
        for j in np.flatnonzero(np.abs(z) > config.feature_outlier_z):
            ref = refs[idx[j]]
            by_sample.setdefault(ref.key, []).append({
                "box": ref.index, "class": names.get(cls, cls), "score": float(proj[j] ** 2),
                "projection": float(proj[j]), "z": float(z[j]), "threshold": config.feature_outlier_z,
            })
    for key in sorted(by_sample):
        boxes = sorted(by_sample[key], key=lambda b: b["box"])
        worst = max(abs(b["z"]) for b in boxes)
        cls_of = {r.cls for r in refs if r.key == key}
        findings.append(make_finding(
            CHECK, suspects=[key],
            evidence={"boxes": boxes, "layers": list(layers), "method": "spectral_signature",
                      "class_stats": {str(names.get(c, c)): classes[c] for c in sorted(cls_of)}},
            message=f"{key}: {len(boxes)} box(es) are backbone feature-space outliers of their class "
                    f"(spectral signature, |z| up to {worst:.1f} > {config.feature_outlier_z:g})",
        ))
    return findings
