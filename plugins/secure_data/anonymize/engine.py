"""Detect -> obfuscate -> verify on a batch of decoded images (tensors on the stage's device).

The engine is storage-free: the shard runner (:mod:`secure_data.anonymize.shard`)
feeds it bytes and writes what it returns. The same engine object serves every
batch of a shard, so models are loaded (and their pins checked) once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from secure_data.anonymize import codec
from secure_data.anonymize.config import AnonymizeConfig, params_digest, resolve_device
from secure_data.anonymize.detect import Box, load_detector
from secure_data.anonymize.obfuscate import Region, Style, obfuscate_batch, padded_region
from secure_data.anonymize.turns import CpuTurns

if TYPE_CHECKING:
    import torch

ESCALATION_PADDING_STEP = 0.25  # extra padding (fraction of the box, per side) per re-obfuscation pass


@dataclass(frozen=True)
class ObfuscatedBox:
    """A box that was obfuscated, and in which pass (0: detection, 1..: verification re-passes)."""

    box: Box
    pass_no: int
    mode: str

    def to_list(self) -> list:
        return [*self.box.to_list(), self.pass_no, self.mode]


@dataclass(frozen=True)
class Outcome:
    """What happened to one image."""

    findings: tuple[ObfuscatedBox, ...]
    residual_per_pass: tuple[int, ...]  # protected-class detections found by each verification pass
    clean: bool  # the last verification pass found nothing
    verified_by: tuple[str, ...] = ()
    area_fraction: float = 0.0  # share of the image's pixels that were obfuscated
    area_outside_labels: float | None = None  # of those, the share outside every labelled protected box

    @property
    def residual_first(self) -> int:
        return self.residual_per_pass[0] if self.residual_per_pass else 0

    def verification(self) -> dict[str, Any]:
        return {"clean": self.clean, "passes": len(self.residual_per_pass),
                "residual_per_pass": list(self.residual_per_pass), "verified_by": list(self.verified_by)}

    def utility(self) -> dict[str, Any]:
        return {"area_fraction": round(self.area_fraction, 6),
                "area_outside_labels": None if self.area_outside_labels is None else round(self.area_outside_labels, 6)}


def _area(regions: Sequence[Region], label_regions: Sequence[Region], h: int, w: int) -> tuple[float, float | None]:
    """(obfuscated share of the image, share of that outside the labelled boxes or None without labels)."""
    import numpy as np

    if not regions:
        return 0.0, (0.0 if label_regions else None)
    mask = np.zeros((h, w), bool)
    for r in regions:
        mask[r.y1:r.y2, r.x1:r.x2] = True
    total = int(mask.sum())
    if not label_regions:
        return total / (h * w), None
    for r in label_regions:
        mask[r.y1:r.y2, r.x1:r.x2] = False
    return total / (h * w), int(mask.sum()) / total


def _intersects(box: Box, regions: Sequence[Region]) -> bool:
    return any(box.x1 < r.x2 and box.x2 > r.x1 and box.y1 < r.y2 and box.y2 > r.y1 for r in regions)


@dataclass
class AnonymizeEngine:
    config: AnonymizeConfig
    device: str = ""
    detectors: list = field(default_factory=list)
    verifiers: list = field(default_factory=list)
    timings: Counter = field(default_factory=Counter)  # seconds per step, for benchmarks and logs

    def __post_init__(self) -> None:
        import torch

        self.device = resolve_device(self.device or self.config.device)
        if self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))
            torch.backends.cudnn.benchmark = False  # same algorithms on a retry: byte-identical outputs
        self.detectors = [load_detector(s, self.config, self.device) for s in self.config.detectors]
        self.verifiers = [load_detector(s, self.config, self.device) for s in self.config.verifiers]
        self.turns = CpuTurns(enabled=self.device_type == "cpu")
        for det in self.detectors + self.verifiers:
            det.turns = self.turns
        known = {n for d in self.detectors for n in d.labels.values()}
        missing = [c for c in self.config.classes if c not in known]
        if missing:
            offered = {d.name: sorted(set(d.model_names.values())) for d in self.detectors}
            raise ValueError(f"no detector provides class(es) {missing}; the models offer {offered}")
        # Verification: every verifier, plus the detectors for the classes no verifier covers (those
        # are re-checked by their own model: a self-check, named as such in the audit).
        covered = {n for v in self.verifiers for n in v.labels.values()}
        self.self_checked = {d.name: [n for n in d.labels.values() if n not in covered] for d in self.detectors}
        self.self_checked = {k: v for k, v in self.self_checked.items() if v}
        det_families = {s.kind for s in self.config.detectors}
        self.independent = {cls: sorted(v.name for v in self.verifiers if cls in v.labels.values()
                                        and v.spec.kind not in det_families) for cls in self.config.classes}
        # Which runtime and arithmetic each model ran with (OpenVINO may compute in bfloat16): audited.
        runtimes = {d.name: getattr(d, "runtime", "torch") for d in self.detectors + self.verifiers}
        self.params = {**self.config.params(self.device_type), "runtimes": runtimes}
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
        start = time.perf_counter()
        if self.device_type == "cuda":
            out = codec.decode_cuda(list(datas), self.device)
        else:
            out = []
            for d in datas:
                try:
                    out.append(codec.decode_cpu(d))
                except codec.DecodeError as exc:
                    out.append(exc)
        self.timings["decode"] += time.perf_counter() - start
        return out

    def encode(self, images: Sequence[torch.Tensor], suffixes: Sequence[str]) -> list[bytes]:
        start = time.perf_counter()
        out = codec.encode(list(images), list(suffixes), self.config.jpeg_quality)
        self.timings["encode"] += time.perf_counter() - start
        return out

    # ------------------------------------------------------------------ detect / obfuscate / verify

    def _detect_conf(self, det) -> float:
        return det.spec.conf or self.config.conf

    def _verify_conf(self, det) -> float:
        return min(self._detect_conf(det), self.config.verify_conf)

    def _detect(self, images: Sequence[torch.Tensor], *, low: bool = False) -> list[list[Box]]:
        """Union of the detectors' boxes (``low``: at the verification threshold; split by score later)."""
        found: list[list[Box]] = [[] for _ in images]
        for det in self.detectors:
            conf = self._verify_conf(det) if low else self._detect_conf(det)
            for i, boxes in enumerate(det.detect(images, conf)):
                found[i].extend(boxes)
        return [sorted(b, key=lambda x: x.sort_key) for b in found]

    def _self_check(self, boxes: Sequence[Box]) -> list[Box]:
        return [b for b in boxes if b.label in self.self_checked.get(b.source, ())]

    def _verify(self, images: Sequence[torch.Tensor], reuse: dict[int, list[Box]],
                focus: Sequence[Sequence[Region] | None] | None = None) -> list[list[Box]]:
        """Verification: the verifiers always run; the self-checking detectors only on changed images
        (on an untouched image they would return the first pass's weak boxes: ``reuse``).

        ``focus`` (re-checks after a re-obfuscation): per image, the regions changed since the last
        check. Everything a verifier found before was obfuscated in this pass and nothing else changed,
        so a verifier that can (``takes_focus``) looks again only around those regions.
        """
        found: list[list[Box]] = [[] for _ in images]
        for det in self.verifiers:
            conf = det.spec.conf or self.config.verify_conf
            if focus is not None and getattr(det, "takes_focus", False):
                rects = [None if f is None else [(r.x1, r.y1, r.x2, r.y2) for r in f] for f in focus]
                out = det.detect(images, conf, focus=rects)
            else:
                out = det.detect(images, conf)
            for i, boxes in enumerate(out):
                found[i].extend(boxes)
        run = [i for i in range(len(images)) if i not in reuse]
        for det in self.detectors:
            if det.name not in self.self_checked or not run:
                continue
            for i, boxes in zip(run, det.detect([images[i] for i in run], self._verify_conf(det)), strict=True):
                found[i].extend(b for b in boxes if b.label in self.self_checked[det.name])
        for i, boxes in reuse.items():
            found[i].extend(self._self_check(boxes))
        return [sorted(b, key=lambda x: x.sort_key) for b in found]

    def _regions(self, image: torch.Tensor, boxes: Sequence[Box], padding: float | None = None) -> list[Region]:
        h, w = int(image.shape[1]), int(image.shape[2])
        pad = self.config.padding if padding is None else padding
        regions = (padded_region((b.x1, b.y1, b.x2, b.y2), pad, w, h) for b in boxes)
        return [r for r in regions if r is not None]

    def anonymize(self, images: list[torch.Tensor], labels: Sequence[Sequence[Box]] | None = None) -> list[Outcome]:
        """Obfuscate every protected box in place, then verify (and re-obfuscate) as configured.

        ``labels``: per image, the boxes the dataset's own labels mark as protected; they are
        obfuscated whatever the detectors say (label-guided protection).
        """
        c = self.config
        t = self.timings
        labels = [list(x) for x in labels] if labels is not None else [[] for _ in images]
        start = time.perf_counter()
        # First pass at the verification threshold: boxes at or above the detection threshold are
        # obfuscated; the weaker ones are what a self-check would find on an untouched image.
        raw = self._detect(images, low=c.verify)
        conf = {d.name: self._detect_conf(d) for d in self.detectors}
        detected = [[b for b in boxes if b.score >= conf[b.source]] + lab for boxes, lab in zip(raw, labels, strict=True)]
        t["detect"] += time.perf_counter() - start
        start = time.perf_counter()
        regions = [self._regions(img, boxes) for img, boxes in zip(images, detected, strict=True)]
        obfuscate_batch(images, regions, self.style)
        t["obfuscate"] += time.perf_counter() - start
        findings = [[ObfuscatedBox(b, 0, c.mode) for b in boxes] for boxes in detected]
        residual: list[list[int]] = [[] for _ in images]
        clean = [True] * len(images)
        verified_by = tuple([v.name for v in self.verifiers] + list(self.self_checked)) if c.verify else ()
        pending = list(range(len(images))) if c.verify else []
        # An image nothing was obfuscated in has exactly its input pixels: re-running the same detectors
        # at the same threshold on it gives the first pass's weak boxes again, so take those instead
        # of a second forward pass of the self-checking detectors (the verifiers always run).
        reuse = {i: raw[i] for i in pending if not regions[i]}
        changed: dict[int, list[Region]] | None = None  # regions re-obfuscated by the last pass
        for pass_no in range(1, c.max_passes + 2):
            if not pending:
                break
            start = time.perf_counter()
            found = self._verify([images[i] for i in pending],
                                 {k: reuse[i] for k, i in enumerate(pending) if i in reuse},
                                 None if changed is None else [changed.get(i, []) for i in pending])
            reuse = {}
            changed = {}
            t["verify"] += time.perf_counter() - start
            for i, boxes in zip(pending, found, strict=True):
                residual[i].append(len(boxes))
                clean[i] = not boxes
            hits = [(i, boxes) for i, boxes in zip(pending, found, strict=True) if boxes]
            pending = [i for i, _ in hits]
            if not hits or c.on_residual == "quarantine" or pass_no > c.max_passes:
                break
            # Residual on top of an obfuscated region: escalate (fill by default) over a larger area each
            # pass: a detector that still fires on a flat patch is responding to the context (hair, head
            # outline), which only a wider region removes. A new, weaker detection elsewhere: obfuscate
            # it like the first pass did.
            grow = c.padding + ESCALATION_PADDING_STEP * pass_no
            esc_imgs, esc_regs, new_imgs, new_regs = [], [], [], []
            for i, boxes in hits:
                esc = [b for b in boxes if _intersects(b, regions[i])]
                new = [b for b in boxes if not _intersects(b, regions[i])]
                findings[i].extend(ObfuscatedBox(b, pass_no, c.escalate_mode) for b in esc)
                findings[i].extend(ObfuscatedBox(b, pass_no, c.mode) for b in new)
                if esc:
                    esc_imgs.append(images[i])
                    esc_regs.append(self._regions(images[i], esc, grow))
                if new:
                    new_imgs.append(images[i])
                    new_regs.append(self._regions(images[i], new))
                redone = self._regions(images[i], esc, grow) + self._regions(images[i], new)
                regions[i] = regions[i] + redone
                changed[i] = redone
            start = time.perf_counter()
            obfuscate_batch(esc_imgs, esc_regs, self.escalate_style)
            obfuscate_batch(new_imgs, new_regs, self.style)
            t["obfuscate"] += time.perf_counter() - start
        outcomes = []
        for img, f, r, ok, regs, lab in zip(images, findings, residual, clean, regions, labels, strict=True):
            h, w = int(img.shape[1]), int(img.shape[2])
            area, outside = _area(regs, self._regions(img, lab), h, w)
            outcomes.append(Outcome(tuple(f), tuple(r), ok, verified_by, area, outside))
        return outcomes
