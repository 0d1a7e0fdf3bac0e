"""Detect -> obfuscate -> verify on a batch of decoded images (tensors on the stage's device).

The engine is storage-free: the shard runner (:mod:`secure_data.anonymize.shard`)
feeds it bytes and writes what it returns. The same engine object serves every
batch of a shard, so models are loaded (and their pins checked) once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from secure_data.anonymize import codec
from secure_data.anonymize.config import AnonymizeConfig, params_digest, resolve_device
from secure_data.anonymize.detect import Box, load_detector
from secure_data.anonymize.obfuscate import Region, Style, obfuscate_batch, padded_region

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Finding:
    """A box that was obfuscated, and in which pass (0: detection, 1..: verification re-passes)."""

    box: Box
    pass_no: int
    mode: str

    def to_list(self) -> list:
        return [*self.box.to_list(), self.pass_no, self.mode]


@dataclass(frozen=True)
class Outcome:
    """What happened to one image."""

    findings: tuple[Finding, ...]
    residual_per_pass: tuple[int, ...]  # protected-class detections found by each verification pass
    clean: bool  # the last verification pass found nothing
    verified_by: tuple[str, ...] = ()

    @property
    def residual_first(self) -> int:
        return self.residual_per_pass[0] if self.residual_per_pass else 0

    def verification(self) -> dict[str, Any]:
        return {"clean": self.clean, "passes": len(self.residual_per_pass),
                "residual_per_pass": list(self.residual_per_pass), "verified_by": list(self.verified_by)}


def _intersects(box: Box, regions: Sequence[Region]) -> bool:
    return any(box.x1 < r.x2 and box.x2 > r.x1 and box.y1 < r.y2 and box.y2 > r.y1 for r in regions)


@dataclass
class AnonymizeEngine:
    config: AnonymizeConfig
    device: str = ""
    detectors: list = field(default_factory=list)
    verifiers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        import torch

        self.device = resolve_device(self.device or self.config.device)
        if self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))
            torch.backends.cudnn.benchmark = False  # same algorithms on a retry: byte-identical outputs
        self.detectors = [load_detector(s, self.config, self.device) for s in self.config.detectors]
        self.verifiers = [load_detector(s, self.config, self.device) for s in self.config.verifiers]
        known = {n for d in self.detectors for n in d.labels.values()}
        missing = [c for c in self.config.classes if c not in known]
        if missing:
            offered = {d.name: sorted(set(d.model_names.values())) for d in self.detectors}
            raise ValueError(f"no detector provides class(es) {missing}; the models offer {offered}")
        self.params = self.config.params(self.device_type)
        self.params_sha256 = params_digest(self.params)
        self.models = {d.name: d.sha256 for d in self.detectors + self.verifiers}
        c = self.config
        fill = None if c.fill_color == "mean" else tuple(c.fill_color)
        self.style = Style(c.mode, c.shape, c.blur_sigma, c.pixel_cells, c.min_block_px, fill)
        self.escalate_style = Style(c.escalate_mode, "rectangle", c.blur_sigma, c.pixel_cells, c.min_block_px, fill)

    @property
    def device_type(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    # ------------------------------------------------------------------ codec

    def decode(self, datas: Sequence[bytes]) -> list[torch.Tensor | codec.DecodeError]:
        if self.device_type == "cuda":
            return codec.decode_cuda(list(datas), self.device)
        out: list = []
        for d in datas:
            try:
                out.append(codec.decode_cpu(d))
            except codec.DecodeError as exc:
                out.append(exc)
        return out

    def encode(self, images: Sequence[torch.Tensor], suffixes: Sequence[str]) -> list[bytes]:
        return codec.encode(list(images), list(suffixes), self.config.jpeg_quality)

    # ------------------------------------------------------------------ detect / obfuscate / verify

    def _detect(self, images: Sequence[torch.Tensor], *, verify: bool) -> list[list[Box]]:
        found: list[list[Box]] = [[] for _ in images]
        c = self.config
        for det in self.detectors:
            conf = c.verify_conf if verify else (det.spec.conf or c.conf)
            if verify and det.spec.conf is not None:
                conf = min(det.spec.conf, c.verify_conf)
            for i, boxes in enumerate(det.detect(images, conf)):
                found[i].extend(boxes)
        if verify:
            for det in self.verifiers:
                for i, boxes in enumerate(det.detect(images, det.spec.conf or c.verify_conf)):
                    found[i].extend(boxes)
        return [sorted(b, key=lambda x: x.sort_key) for b in found]

    def _regions(self, image: torch.Tensor, boxes: Sequence[Box]) -> list[Region]:
        h, w = int(image.shape[1]), int(image.shape[2])
        regions = (padded_region((b.x1, b.y1, b.x2, b.y2), self.config.padding, w, h) for b in boxes)
        return [r for r in regions if r is not None]

    def anonymize(self, images: list[torch.Tensor]) -> list[Outcome]:
        """Obfuscate every protected box in place, then verify (and re-obfuscate) as configured."""
        c = self.config
        detected = self._detect(images, verify=False)
        regions = [self._regions(img, boxes) for img, boxes in zip(images, detected, strict=True)]
        obfuscate_batch(images, regions, self.style)
        findings = [[Finding(b, 0, c.mode) for b in boxes] for boxes in detected]
        residual: list[list[int]] = [[] for _ in images]
        clean = [True] * len(images)
        verified_by = tuple(d.name for d in self.detectors + self.verifiers) if c.verify else ()
        pending = list(range(len(images))) if c.verify else []
        for pass_no in range(1, c.max_passes + 2):
            if not pending:
                break
            found = self._detect([images[i] for i in pending], verify=True)
            for i, boxes in zip(pending, found, strict=True):
                residual[i].append(len(boxes))
                clean[i] = not boxes
            hits = [(i, boxes) for i, boxes in zip(pending, found, strict=True) if boxes]
            pending = [i for i, _ in hits]
            if not hits or c.on_residual == "quarantine" or pass_no > c.max_passes:
                break
            # Residual on top of an obfuscated region: escalate (fill by default). A new, weaker
            # detection elsewhere: obfuscate it like the first pass did.
            esc_imgs, esc_regs, new_imgs, new_regs = [], [], [], []
            for i, boxes in hits:
                esc = [b for b in boxes if _intersects(b, regions[i])]
                new = [b for b in boxes if not _intersects(b, regions[i])]
                findings[i].extend(Finding(b, pass_no, c.escalate_mode) for b in esc)
                findings[i].extend(Finding(b, pass_no, c.mode) for b in new)
                if esc:
                    esc_imgs.append(images[i])
                    esc_regs.append(self._regions(images[i], esc))
                if new:
                    new_imgs.append(images[i])
                    new_regs.append(self._regions(images[i], new))
                regions[i] = regions[i] + self._regions(images[i], boxes)
            obfuscate_batch(esc_imgs, esc_regs, self.escalate_style)
            obfuscate_batch(new_imgs, new_regs, self.style)
        return [Outcome(tuple(f), tuple(r), ok, verified_by) for f, r, ok in zip(findings, residual, clean, strict=True)]
