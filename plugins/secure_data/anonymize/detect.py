"""Batched detection on decoded tensors: GPU letterbox, direct model call, batched NMS.

The stock ``YOLO.predict`` loop pre-processes on the CPU one image at a time;
here the images are already tensors on the device, so letterboxing is one
``interpolate`` per group of same-size images, the network is called directly
through Ultralytics' ``AutoBackend`` (which loads ``.pt``, ``.onnx`` and
``.engine`` alike) and NMS runs once per batch (``torchvision.ops.batched_nms``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from secure_data.anonymize.config import AnonymizeConfig, DetectorSpec
from secure_data.anonymize.modelfile import private_copy, read_pinned
from secure_data.anonymize.turns import CpuTurns
from secure_data.models.letterbox import LETTERBOX_FILL, letterbox_group
from secure_data.models.letterbox import group_by_canvas as _group_by_canvas
from secure_data.models.letterbox import unletterbox as _unletterbox

if TYPE_CHECKING:
    import torch

@dataclass(frozen=True)
class Box:
    """One detection in original image pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    score: float
    source: str

    def to_list(self) -> list:
        return [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1),
                self.label, round(self.score, 4), self.source]

    @property
    def sort_key(self) -> tuple:
        return (self.x1, self.y1, self.x2, self.y2, self.label, -self.score, self.source)


def batched_nms(pred: torch.Tensor, *, conf: float, iou: float, class_ids: Sequence[int], max_det: int,
                end2end: bool) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per image (xyxy, score, class) from YOLO output (B, 4 + nc, N), or (B, N, 6) for end-to-end heads."""
    import torch
    import torchvision

    bs = pred.shape[0]
    wanted = torch.tensor(list(class_ids), device=pred.device)
    empty = (pred.new_zeros((0, 4)).float(), pred.new_zeros((0,)).float(), pred.new_zeros((0,)).long())
    if end2end or pred.shape[-1] == 6:  # already NMS-free output: x1, y1, x2, y2, score, cls
        out = []
        for b in range(bs):
            p = pred[b].float()
            keep = (p[:, 4] > conf) & torch.isin(p[:, 5].long(), wanted)
            p = p[keep][:max_det]
            out.append((p[:, :4], p[:, 4], p[:, 5].long()))
        return out
    p = pred.transpose(1, 2).float()  # (B, N, 4 + nc)
    scores_all = p[..., 4:]
    # Only the protected classes compete: a "person" score must not hide an overlapping "face".
    scores_all = scores_all[..., wanted]
    score, j = scores_all.max(-1)
    cls = wanted[j]
    b_idx, n_idx = torch.nonzero(score > conf, as_tuple=True)
    if b_idx.numel() == 0:
        return [empty] * bs
    xywh = p[b_idx, n_idx, :4]
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    s, c = score[b_idx, n_idx], cls[b_idx, n_idx]
    keep = torchvision.ops.batched_nms(xyxy, s, b_idx * (int(wanted.max()) + 1) + c, iou)  # sorted by score
    b_keep = b_idx[keep]
    out = []
    for b in range(bs):
        k = keep[b_keep == b][:max_det]
        out.append((xyxy[k], s[k], c[k]))
    return out


class YoloDetector:
    """An Ultralytics detection model behind a SHA-256 pin, called directly on device tensors."""

    turns = CpuTurns(enabled=False)  # the engine sets its own

    def __init__(self, spec: DetectorSpec, config: AnonymizeConfig, device: str) -> None:
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        self.spec = spec
        self.name = spec.name
        self.sha256 = spec.model_sha256
        self.device = torch.device(device)
        self.half = (config.half if config.half is not None else self.device.type == "cuda") and self.device.type == "cuda"
        data = read_pinned(spec.model_path, spec.model_sha256)
        with private_copy(data, Path(spec.model_path).suffix.lower()) as path:
            self.backend = AutoBackend(str(path), device=self.device, fp16=self.half, fuse=True, verbose=False)
        self.backend.eval()
        self.format = self.backend.format
        self.stride = int(getattr(self.backend, "stride", 32) or 32)
        self.end2end = bool(getattr(self.backend, "end2end", False))
        names = dict(self.backend.names)
        wanted = spec.classes if spec.classes is not None else config.classes
        self.class_ids = [i for i, n in names.items() if n in wanted and n in config.classes]
        self.labels = {i: names[i] for i in self.class_ids}
        self.model_names = names
        self.imgsz = spec.imgsz or config.imgsz
        meta_imgsz = (getattr(self.backend, "metadata", None) or {}).get("imgsz")
        # Exported graphs usually have a fixed input: use it, square. PyTorch models take any stride multiple.
        self.square = self.format != "pt"
        if self.square and meta_imgsz:
            self.imgsz = int(max(meta_imgsz))
        self.iou = config.iou
        self.max_det = config.max_det

    @property
    def dtype(self):
        import torch

        return torch.float16 if self.half else torch.float32

    def detect(self, images: Sequence[torch.Tensor], conf: float) -> list[list[Box]]:
        import torch

        results: list[list[Box]] = [[] for _ in images]
        if not self.class_ids:
            return results
        for ((h, w), canvas, new), idxs in _group_by_canvas(images, self.imgsz, self.stride, self.square).items():
            batch, lb = letterbox_group([images[i] for i in idxs], canvas, new, self.dtype, LETTERBOX_FILL)
            with self.turns.exclusive(), torch.inference_mode():
                preds = self.backend(batch.div_(255.0))
            if isinstance(preds, (list, tuple)):
                preds = preds[0]
            dets = batched_nms(preds, conf=conf, iou=self.iou, class_ids=self.class_ids, max_det=self.max_det,
                               end2end=self.end2end)
            for i, (xyxy, score, cls) in zip(idxs, dets, strict=True):
                xs, ys = _unletterbox(xyxy, lb, h, w)
                rows = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1], score, cls.float()], 1).cpu().tolist()
                results[i] = [Box(r[0], r[1], r[2], r[3], self.labels[int(r[5])], r[4], self.name) for r in rows]
        return results


# CenterFace's stride-4 heat map finds faces from about 12 px at native resolution (measured on the
# real-photo set of bench/anonymize_real.py); a smaller ``min_face_px`` upsamples the image to match.
CENTERFACE_FLOOR_PX = 12.0
MAX_NATIVE_PIXELS = 40_000_000  # beyond this a native pass is downscaled (memory of the heat maps)


def native_scale(h: int, w: int, floor_px: float, min_face_px: float) -> float:
    """Scale at which a ``min_face_px`` face reaches the detector's ``floor_px`` (never below 1: native)."""
    scale = max(1.0, floor_px / max(min_face_px, 1e-6))
    if h * w * scale * scale > MAX_NATIVE_PIXELS:
        scale = math.sqrt(MAX_NATIVE_PIXELS / (h * w))
    return scale


class CenterFaceAdapter:
    """CenterFace behind the same interface; it only knows the class ``face``.

    Without ``imgsz`` on its spec it runs at the image's own resolution (fully convolutional, so
    that is one pass over every pixel, like tiles without seams), upsampled when ``min_face_px``
    is below what it sees natively; with ``imgsz`` it letterboxes to that size as before.
    """

    turns = CpuTurns(enabled=False)

    def __init__(self, spec: DetectorSpec, config: AnonymizeConfig, device: str) -> None:
        from secure_data.anonymize.centerface import CENTERFACE_CLASS, CenterFaceDetector

        self.spec = spec
        self.name = spec.name
        self.sha256 = spec.model_sha256
        wanted = spec.classes if spec.classes is not None else config.classes
        self.active = CENTERFACE_CLASS in wanted and CENTERFACE_CLASS in config.classes
        self.model_names = {0: CENTERFACE_CLASS}
        self.labels = {0: CENTERFACE_CLASS} if self.active else {}
        self.net = CenterFaceDetector(spec.model_path, spec.model_sha256, device=device)
        self.runtime = f"{self.net.backend}/{self.net.precision}"
        self.imgsz = spec.imgsz
        self.min_face_px = config.min_face_px

    def _groups(self, images: Sequence[torch.Tensor]):
        if self.imgsz:
            return _group_by_canvas(images, self.imgsz, 32, False)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            h, w = int(img.shape[1]), int(img.shape[2])
            s = native_scale(h, w, CENTERFACE_FLOOR_PX, self.min_face_px)
            nh, nw = max(1, round(h * s)), max(1, round(w * s))
            groups.setdefault(((h, w), (math.ceil(nh / 32) * 32, math.ceil(nw / 32) * 32), (nh, nw)), []).append(i)
        return groups

    def detect(self, images: Sequence[torch.Tensor], conf: float) -> list[list[Box]]:
        import torch

        results: list[list[Box]] = [[] for _ in images]
        if not self.active:
            return results
        for ((h, w), canvas, new), idxs in self._groups(images).items():
            cpu_imgs = [images[i].cpu() for i in idxs]
            dtype = torch.uint8 if self.net.backend == "openvino" else torch.float32
            batch, lb = letterbox_group(cpu_imgs, canvas, new, dtype, 0.0)
            with self.turns.exclusive():
                outs = self.net.forward(batch, conf)
            for i, out in zip(idxs, outs, strict=True):
                xs, ys = _unletterbox(out.boxes, lb, h, w)
                rows = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1], out.scores], 1).tolist()
                results[i] = [Box(r[0], r[1], r[2], r[3], "face", r[4], self.name) for r in rows]
        return results


class BlazeFaceAdapter:
    """BlazeFace full-range (TFLite) over native-resolution tiles; it only knows the class ``face``."""

    turns = CpuTurns(enabled=False)
    takes_focus = True  # can re-check only the tiles around changed regions

    def __init__(self, spec: DetectorSpec, config: AnonymizeConfig, device: str) -> None:
        from secure_data.anonymize.blazeface import BlazeFaceDetector

        self.spec = spec
        self.name = spec.name
        self.sha256 = spec.model_sha256
        wanted = spec.classes if spec.classes is not None else config.classes
        self.active = "face" in wanted and "face" in config.classes
        self.model_names = {0: "face"}
        self.labels = {0: "face"} if self.active else {}
        self.net = BlazeFaceDetector(spec.model_path, spec.model_sha256)
        self.runtime = f"{self.net.backend}/{self.net.precision}"
        self.min_face_px = config.min_face_px

    def detect(self, images: Sequence[torch.Tensor], conf: float, focus=None) -> list[list[Box]]:
        import numpy as np

        results: list[list[Box]] = [[] for _ in images]
        if not self.active:
            return results
        for i, img in enumerate(images):
            rgb = np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy())
            where = None if focus is None or focus[i] is None else focus[i]
            with self.turns.exclusive():
                boxes, scores = self.net.detect(rgb, conf, min_face_px=self.min_face_px, focus=where)
            results[i] = [Box(b[0], b[1], b[2], b[3], "face", s, self.name)
                          for b, s in zip(boxes.tolist(), scores.tolist(), strict=True)]
        return results


def load_detector(spec: DetectorSpec, config: AnonymizeConfig, device: str):
    if spec.kind == "centerface":
        return CenterFaceAdapter(spec, config, device)
    if spec.kind == "blazeface":
        return BlazeFaceAdapter(spec, config, device)
    return YoloDetector(spec, config, device)
