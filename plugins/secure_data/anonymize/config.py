"""What the anonymize stage is asked to do: detectors, classes, obfuscation, verification, batching.

Everything here is plain data (frozen dataclasses) so it can be built from
operator arguments, logged, hashed into the audit log and compared on resume.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from secure_data.dataset.manifest import canonical_json
from secure_data.models.device import resolve_device  # noqa: F401 (re-exported for the anonymize stage)
from secure_data.models.pinned import normalise_sha256

MODES = ("blur", "pixelate", "fill")
SHAPES = ("rectangle", "ellipse")
KINDS = ("yolo", "centerface", "blazeface")
# Label class names protected by default: boxes the dataset itself marks are always obfuscated.
DEFAULT_LABEL_CLASSES = ("face", "faces", "plate", "license_plate", "licence_plate", "licenseplate", "number_plate")
FACE_WORDS = ("face", "faces", "head")
PLATE_WORDS = ("plate", "license_plate", "licence_plate", "licenseplate", "number_plate", "plates")
ON_RESIDUAL = ("reobfuscate", "quarantine")
RESIDUAL_POLICIES = ("quarantine", "fail")
MODEL_SUFFIXES = (".pt", ".onnx", ".engine")


@dataclass(frozen=True)
class DetectorSpec:
    """One detection model. ``conf``/``imgsz``/``classes`` left as None inherit the stage's values."""

    model_path: str
    model_sha256: str
    kind: str = "yolo"  # "yolo": Ultralytics (.pt/.onnx/.engine); "centerface": ONNX; "blazeface": TFLite
    name: str | None = None  # id in the audit log; default: file stem
    conf: float | None = None
    imgsz: int | None = None
    classes: tuple[str, ...] | None = None  # restrict this detector to these names (within the stage's classes)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_path", os.fspath(self.model_path))
        object.__setattr__(self, "model_sha256", normalise_sha256(self.model_sha256))
        if self.kind not in KINDS:
            raise ValueError(f"detector kind must be one of {KINDS}, not {self.kind!r}")
        suffix = Path(self.model_path).suffix.lower()
        allowed = {"yolo": MODEL_SUFFIXES, "centerface": (".onnx",), "blazeface": (".tflite",)}[self.kind]
        if suffix not in allowed:
            raise ValueError(f"{self.kind} model must end in one of {allowed}: {self.model_path!r}")
        if self.conf is not None and not 0.0 < self.conf < 1.0:
            raise ValueError(f"conf must be in (0, 1), got {self.conf}")
        if self.imgsz is not None and (self.imgsz < 32 or self.imgsz % 32):
            raise ValueError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.name is None:
            object.__setattr__(self, "name", f"{self.kind}:{Path(self.model_path).stem}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown detector option(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        if values.get("classes") is not None:
            values["classes"] = tuple(values["classes"])
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """What defines this detector's behaviour (the path is where, not what: left out)."""
        return {"name": self.name, "kind": self.kind, "sha256": self.model_sha256, "conf": self.conf,
                "imgsz": self.imgsz, "classes": list(self.classes) if self.classes is not None else None}


@dataclass(frozen=True)
class AnonymizeConfig:
    detectors: tuple[DetectorSpec, ...]
    classes: tuple[str, ...] = ("face", "plate")
    conf: float = 0.25
    iou: float = 0.5
    imgsz: int = 640
    max_det: int = 300
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    half: bool | None = None  # None: fp16 on CUDA, fp32 on CPU
    batch_size: int = 16
    # Obfuscation
    mode: str = "blur"
    shape: str = "rectangle"
    padding: float = 0.1  # fraction of the box's width/height added on each side
    blur_sigma: float = 0.35  # Gaussian sigma as a fraction of the padded box's size (per axis)
    pixel_cells: int = 8  # pixelate: at most this many blocks across the box (block >= box / cells)
    min_block_px: int = 4  # pixelate: ... and never blocks smaller than this many pixels
    fill_color: tuple[int, int, int] | str = "mean"  # "mean": the region's mean colour, or an RGB triple
    # Verification
    verify: bool = True
    verify_conf: float = 0.1
    verifiers: tuple[DetectorSpec, ...] = ()  # independent detectors used only to check the output
    on_residual: str = "reobfuscate"  # "reobfuscate" (then quarantine if still found) | "quarantine"
    max_passes: int = 2  # extra obfuscation passes for residual detections
    escalate_mode: str = "fill"  # mode used on residual boxes
    residual_policy: str = "quarantine"  # an image still showing a protected class: quarantine it, or fail the task
    # Output and throughput
    jpeg_quality: int = 90
    read_workers: int = 4
    write_workers: int = 4
    prefetch_batches: int = 2
    # Scale: the smallest face (px, in the image as stored) the detectors must see; tilers and
    # multi-scale passes are planned from it and the image size.
    min_face_px: float = 12.0
    # Label-guided protection: boxes of these label class names (data.yaml) are always obfuscated.
    label_classes: tuple[str, ...] = DEFAULT_LABEL_CLASSES
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dets = tuple(d if isinstance(d, DetectorSpec) else DetectorSpec.from_dict(d) for d in self.detectors)
        vers = tuple(d if isinstance(d, DetectorSpec) else DetectorSpec.from_dict(d) for d in self.verifiers)
        object.__setattr__(self, "detectors", dets)
        object.__setattr__(self, "verifiers", vers)
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "label_classes", tuple(str(c) for c in self.label_classes))
        if not 2.0 <= float(self.min_face_px) <= 1024.0:
            raise ValueError(f"min_face_px must be in [2, 1024], got {self.min_face_px}")
        if self.fill_color != "mean":
            object.__setattr__(self, "fill_color", tuple(int(c) for c in self.fill_color))
        if not dets:
            raise ValueError("at least one detector is required")
        if not self.classes:
            raise ValueError("classes to obfuscate must not be empty")
        names = [d.name for d in dets + vers]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        for name, value, allowed in (("mode", self.mode, MODES), ("escalate_mode", self.escalate_mode, MODES),
                                     ("shape", self.shape, SHAPES), ("on_residual", self.on_residual, ON_RESIDUAL),
                                     ("residual_policy", self.residual_policy, RESIDUAL_POLICIES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
        for name in ("conf", "verify_conf", "iou"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")
        if self.batch_size < 1 or self.max_passes < 0 or self.read_workers < 1 or self.write_workers < 1:
            raise ValueError("batch_size, read_workers and write_workers must be >= 1, max_passes >= 0")
        if not 0.0 <= self.padding <= 1.0:
            raise ValueError(f"padding must be in [0, 1], got {self.padding}")
        if not 0.05 <= self.blur_sigma <= 1.0:
            raise ValueError(f"blur_sigma must be in [0.05, 1] (fraction of the box), got {self.blur_sigma}")
        if not 1 <= self.pixel_cells <= 64 or self.min_block_px < 1:
            raise ValueError("pixel_cells must be in [1, 64] and min_block_px >= 1")
        if self.fill_color != "mean" and (len(self.fill_color) != 3 or not all(0 <= c <= 255 for c in self.fill_color)):
            raise ValueError(f"fill_color must be three values in 0..255, got {self.fill_color}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        d = self.device
        if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {d!r}")

    def with_device(self, device: str) -> AnonymizeConfig:
        return replace(self, device=device)

    def params(self, device_type: str) -> dict[str, Any]:
        """Everything that decides the output bytes: written into every audit line and hashed for resume."""
        half = self.half if self.half is not None else device_type == "cuda"
        return {
            "detectors": [d.identity() for d in self.detectors],
            "verifiers": [d.identity() for d in self.verifiers],
            "classes": list(self.classes), "conf": self.conf, "iou": self.iou, "imgsz": self.imgsz,
            "max_det": self.max_det, "device_type": device_type, "half": bool(half and device_type == "cuda"),
            "batch_size": self.batch_size,
            "mode": self.mode, "shape": self.shape, "padding": self.padding, "blur_sigma": self.blur_sigma,
            "pixel_cells": self.pixel_cells, "min_block_px": self.min_block_px,
            "fill_color": self.fill_color if self.fill_color == "mean" else list(self.fill_color),
            "verify": self.verify, "verify_conf": self.verify_conf, "on_residual": self.on_residual,
            "max_passes": self.max_passes, "escalate_mode": self.escalate_mode, "jpeg_quality": self.jpeg_quality,
            "min_face_px": self.min_face_px, "label_classes": sorted(self.label_classes),
        }

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("detectors", "verifiers"):
                v = [{k: getattr(d, k) for k in (x.name for x in fields(d))} for d in v]
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnonymizeConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown anonymize option(s) {sorted(unknown)}")
        values = dict(data)
        for key in ("detectors", "verifiers", "classes", "fill_color", "label_classes"):
            if key in values and values[key] is not None and values[key] != "mean":
                values[key] = tuple(values[key])
        return cls(**values)


def protected_name(label_name: str, classes: tuple[str, ...]) -> str:
    """The protected class a label class name stands for (``license_plate`` -> ``plate``)."""
    low = label_name.lower()
    if low in classes:
        return low
    if low in FACE_WORDS and "face" in classes:
        return "face"
    if low in PLATE_WORDS and "plate" in classes:
        return "plate"
    return label_name


def family(spec: DetectorSpec) -> str:
    """Detector family: models of one family share blind spots, so a verifier must be of another."""
    return spec.kind


def params_digest(params: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(params).encode()).hexdigest()


# Operator / DAG-param spellings -> AnonymizeConfig fields.
_ALIASES = {"box_padding": "padding", "confidence": "conf", "verify_confidence": "verify_conf",
            "iou_threshold": "iou"}
_INTS = ("imgsz", "max_det", "batch_size", "pixel_cells", "min_block_px", "max_passes", "jpeg_quality",
         "read_workers", "write_workers", "prefetch_batches")
_FLOATS = ("conf", "iou", "padding", "blur_sigma", "verify_conf", "min_face_px")


def _listish(value: Any) -> list:
    """A list from a list, a JSON/Python list literal, or 'a,b' (templated values may arrive as text)."""
    import ast

    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return list(ast.literal_eval(text))
        return [v.strip() for v in text.split(",") if v.strip()]
    return list(value)


def config_from_options(options: Mapping[str, Any]) -> AnonymizeConfig:
    """Build a config from flat operator options.

    ``model_path``/``model_sha256`` name the main (YOLO) detector; ``face_model_path``/
    ``face_model_sha256`` add CenterFace for the class ``face`` (empty path: not used), as a
    detector (``face_model_role="detector"``, default: union of boxes, and re-run in verification)
    or only as an independent verifier (``"verifier"``). ``detectors``/``verifiers`` take full
    :class:`DetectorSpec` dicts. Other keys are :class:`AnonymizeConfig` fields (or their aliases).
    """
    opts = {_ALIASES.get(k, k): v for k, v in dict(options).items() if v is not None and v != ""}
    detectors = [DetectorSpec.from_dict(d) for d in _listish(opts.pop("detectors", None))]
    verifiers = [DetectorSpec.from_dict(d) for d in _listish(opts.pop("verifiers", None))]
    model_path, model_sha = opts.pop("model_path", None), opts.pop("model_sha256", None)
    if model_path:
        if not model_sha:
            raise ValueError("model_sha256 is required with model_path: a model is loaded only against a pin")
        detectors.insert(0, DetectorSpec(str(model_path), str(model_sha), kind=opts.pop("model_kind", "yolo")))
    face_path, face_sha = opts.pop("face_model_path", None), opts.pop("face_model_sha256", None)
    role = opts.pop("face_model_role", "detector")
    if face_path:
        if not face_sha:
            raise ValueError("face_model_sha256 is required with face_model_path")
        spec = DetectorSpec(str(face_path), str(face_sha), kind="centerface", name="centerface",
                            classes=("face",), conf=float(opts.pop("face_conf", 0.5)))
        (detectors if role == "detector" else verifiers).append(spec)
    if not detectors:
        raise ValueError("no detector configured: set model_path and model_sha256 (or detectors)")
    for key in ("classes", "label_classes"):
        if key in opts:
            opts[key] = tuple(str(c) for c in _listish(opts[key]))
    if "fill_color" in opts and opts["fill_color"] != "mean":
        opts["fill_color"] = tuple(int(c) for c in _listish(opts["fill_color"]))
    for key in _INTS:
        if key in opts:
            opts[key] = int(opts[key])
    for key in _FLOATS:
        if key in opts:
            opts[key] = float(opts[key])
    for key in ("verify", "half"):
        if isinstance(opts.get(key), str):
            opts[key] = opts[key].strip().lower() in ("1", "true", "yes", "on")
    return AnonymizeConfig.from_dict({**opts, "detectors": tuple(detectors), "verifiers": tuple(verifiers)})
