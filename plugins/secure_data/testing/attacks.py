"""Seeded poisoning attacks on a generated YOLO dataset, with the ground truth of what was poisoned.

Shared by tests/poisoning and bench/poison_attacks.py so that both measure the same
thing. Every attack rewrites ``k = round(rate * n_images)`` samples in place of
clean ones, so the image count and the clean background stay the same across
attacks and rates:

* ``label_flip``: a train slot is overwritten with a copy of another train image
  (exact bytes, re-encoded at quality 70-95, brightness/contrast +-10 %, or up to
  ``crop_max`` = 2 % cut from each side and resized back) whose boxes all carry the
  other class.
* ``split_leak``: a val/test slot is overwritten with a near-copy of a train image
  and its correct labels (train/test contamination).
* ``trigger_fixed`` / ``trigger_random``: a seeded 3x3-cell colour patch is stamped
  (fixed corner / random position) into train images and every box is relabelled
  to the target class (BadNets misclassification).
* ``trigger_vanish``: the patch at a random position and every box removed
  (object-disappearance backdoor).
* ``box_shift``: every box of a train image is moved 0.5-1 box sizes off its object.

``integrity_like_manifest`` writes a manifest with the integrity stage's
conventions (image meta width/height, label meta boxes) without running that stage.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secure_data.dataset.layout import walk_dataset
from secure_data.dataset.manifest import FileRecord, count_records, sha256_hex, write_manifest
from secure_data.dataset.stage import StageResult

ATTACKS = ("label_flip", "split_leak", "trigger_fixed", "trigger_random", "trigger_vanish", "box_shift")
RATES = (0.01, 0.05, 0.10)
COPY_KINDS = ("exact", "reencode", "photometric", "crop")


@dataclass(frozen=True)
class AttackedDataset:
    root: Path
    attack: str
    rate: float
    poisoned: frozenset[str]  # sample keys "<split>/<stem>" the attack wrote
    sources: frozenset[str] = frozenset()  # clean samples a copy was made from (involved, not poisoned)
    n_samples: int = 0
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- dataset io

def _read_boxes(path: Path) -> list[list[float]]:
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:
            out.append([int(parts[0]), *map(float, parts[1:])])
    return out


def _write_boxes(path: Path, boxes) -> None:
    path.write_text("".join(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in boxes))


def _samples(root: Path) -> dict[str, list[str]]:
    by_split: dict[str, list[str]] = {}
    for p in sorted((root / "images").glob("*/*")):
        by_split.setdefault(p.parent.name, []).append(p.stem)
    return by_split


def _paths(root: Path, split: str, stem: str) -> tuple[Path, Path]:
    return root / "images" / split / f"{stem}.jpg", root / "labels" / split / f"{stem}.txt"


def _decode(path: Path):
    import cv2
    import numpy as np

    return cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)


def _encode(img, quality: int = 92) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# ---------------------------------------------------------------- perturbations

def near_copy(src_bytes: bytes, boxes, kind: str, rng, crop_max: float = 0.02) -> tuple[bytes, list]:
    """A copy of an image as an attacker would make it, and the boxes moved with it.

    ``crop``: up to ``crop_max`` of each side cut away, resized back to the original size.
    """
    import cv2
    import numpy as np

    if kind == "exact":
        return src_bytes, [list(b) for b in boxes]
    img = cv2.imdecode(np.frombuffer(src_bytes, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    if kind == "reencode":
        return _encode(img, int(rng.integers(70, 96))), [list(b) for b in boxes]
    if kind == "photometric":
        alpha, beta = float(rng.uniform(0.9, 1.1)), float(rng.uniform(-10, 10))
        return _encode(cv2.convertScaleAbs(img, alpha=alpha, beta=beta)), [list(b) for b in boxes]
    if kind == "crop":
        x0, x1, y0, y1 = (int(v) for v in rng.integers(0, max(1, int(round(crop_max * min(w, h)))) + 1, size=4))
        crop = cv2.resize(img[y0:h - y1, x0:w - x1], (w, h), interpolation=cv2.INTER_AREA)
        cw, ch = w - x0 - x1, h - y0 - y1
        moved = []
        for c, cx, cy, bw, bh in boxes:
            bx1 = max(0.0, (cx - bw / 2) * w - x0) / cw
            by1 = max(0.0, (cy - bh / 2) * h - y0) / ch
            bx2 = min(float(cw), (cx + bw / 2) * w - x0) / cw
            by2 = min(float(ch), (cy + bh / 2) * h - y0) / ch
            if bx2 > bx1 and by2 > by1:
                moved.append([c, (bx1 + bx2) / 2, (by1 + by2) / 2, bx2 - bx1, by2 - by1])
        return _encode(crop), moved
    raise ValueError(f"unknown copy kind {kind!r}")


def trigger_patch(px: int, seed: int):
    """The BadNets patch: 3x3 cells of seeded saturated colours, ``px`` pixels square."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed + 7919)
    cells = rng.choice(np.array([0, 255], np.uint8), size=(3, 3, 3))
    cells[1, 1] = 255 - cells[0, 0]  # never a flat patch
    return cv2.resize(cells, (px, px), interpolation=cv2.INTER_NEAREST)


def _shift_boxes(boxes, rng, lo: float, hi: float) -> list:
    out = []
    for c, cx, cy, w, h in boxes:
        best = [c, cx, cy, w, h]
        for _ in range(20):
            ang, mag = rng.uniform(0, 2 * math.pi), rng.uniform(lo, hi)
            nx = min(max(cx + math.cos(ang) * mag * w, w / 2), 1 - w / 2)
            ny = min(max(cy + math.sin(ang) * mag * h, h / 2), 1 - h / 2)
            best = [c, nx, ny, w, h]
            if math.hypot((nx - cx) / w, (ny - cy) / h) >= lo * 0.9:
                break
        out.append(best)
    return out


# ---------------------------------------------------------------- attacks

def make_clean_dataset(root: str | os.PathLike, *, n_train: int = 480, n_val: int = 120, n_test: int = 0,
                       size: int = 160, seed: int = 0) -> Path:
    from secure_data.testing.datasets import make_yolo_dataset

    return make_yolo_dataset(root, n_train=n_train, n_val=n_val, n_test=n_test, width=size, height=size, seed=seed)


def inject_attack(
    clean_root: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    attack: str,
    rate: float,
    seed: int = 0,
    trigger_px: int = 12,
    target_class: int = 1,
    n_classes: int = 2,
    shift: tuple[float, float] = (0.5, 1.0),
    crop_max: float = 0.02,
    jpeg_quality: int = 92,
) -> AttackedDataset:
    """Copy ``clean_root`` to ``out_root`` and poison ``round(rate * n_images)`` samples."""
    import numpy as np

    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; known: {ATTACKS}")
    clean_root, out_root = Path(clean_root), Path(out_root)
    shutil.copytree(clean_root, out_root)
    rng = np.random.default_rng([seed, ATTACKS.index(attack), int(round(rate * 1000))])
    splits = _samples(out_root)
    n_total = sum(len(v) for v in splits.values())
    k = int(round(rate * n_total))
    train = [f"train/{s}" for s in splits.get("train", [])]
    evals = [f"{sp}/{s}" for sp in ("val", "test") for s in splits.get(sp, [])]
    poisoned: set[str] = set()
    sources: set[str] = set()
    details: dict[str, Any] = {"k": k, "n_images": n_total}

    def paths(key: str) -> tuple[Path, Path]:
        split, stem = key.split("/", 1)
        return _paths(out_root, split, stem)

    if attack in ("label_flip", "split_leak"):
        slots_pool = train if attack == "label_flip" else evals
        if k > len(slots_pool) or k > len(train) - (k if attack == "label_flip" else 0):
            raise ValueError(f"{attack} at rate {rate} needs {k} slots; the dataset is too small")
        perm = rng.permutation(len(train))
        if attack == "label_flip":
            slots = [train[i] for i in perm[:k]]
            srcs = [train[i] for i in perm[k:2 * k]]
        else:
            slots = [evals[i] for i in rng.permutation(len(evals))[:k]]
            srcs = [train[i] for i in perm[:k]]
        kinds = []
        for slot, src in zip(slots, srcs, strict=True):
            s_img, s_lbl = paths(src)
            kind = COPY_KINDS[int(rng.integers(0, len(COPY_KINDS)))]
            data, boxes = near_copy(s_img.read_bytes(), _read_boxes(s_lbl), kind, rng, crop_max)
            if attack == "label_flip":
                boxes = [[(int(b[0]) + 1) % n_classes, *b[1:]] for b in boxes]
            d_img, d_lbl = paths(slot)
            d_img.write_bytes(data)
            _write_boxes(d_lbl, boxes)
            kinds.append(kind)
        poisoned, sources = set(slots), set(srcs)
        details["copy_kinds"] = {kd: kinds.count(kd) for kd in COPY_KINDS}
        details["crop_max"] = crop_max
        details["copies"] = [[slot, src, kd] for slot, src, kd in zip(slots, srcs, kinds, strict=True)]
    elif attack.startswith("trigger_"):
        patch = trigger_patch(trigger_px, seed)
        victims = [train[i] for i in rng.permutation(len(train))[:k]]
        positions = []
        for key in victims:
            img_path, lbl_path = paths(key)
            img = _decode(img_path)
            h, w = img.shape[:2]
            if attack == "trigger_fixed":
                x, y = w - trigger_px - 4, h - trigger_px - 4
            else:
                x, y = int(rng.integers(0, w - trigger_px + 1)), int(rng.integers(0, h - trigger_px + 1))
            img[y:y + trigger_px, x:x + trigger_px] = patch
            img_path.write_bytes(_encode(img, jpeg_quality))
            boxes = _read_boxes(lbl_path)
            boxes = [] if attack == "trigger_vanish" else [[target_class, *b[1:]] for b in boxes]
            _write_boxes(lbl_path, boxes)
            positions.append([x, y])
        poisoned = set(victims)
        details.update({"trigger_px": trigger_px, "target_class": target_class, "jpeg_quality": jpeg_quality})
    elif attack == "box_shift":
        victims = [train[i] for i in rng.permutation(len(train))[:k]]
        for key in victims:
            _, lbl_path = paths(key)
            _write_boxes(lbl_path, _shift_boxes(_read_boxes(lbl_path), rng, *shift))
        poisoned = set(victims)
        details["shift_box_sizes"] = list(shift)
    return AttackedDataset(root=out_root, attack=attack, rate=rate, poisoned=frozenset(poisoned),
                           sources=frozenset(sources), n_samples=n_total, details=details)


# ---------------------------------------------------------------- manifest (integrity conventions)

def _image_meta(data: bytes, suffix: str) -> dict[str, Any]:
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        return {"format": suffix.lstrip(".").lower(), "decodable": False}
    h, w = img.shape[:2]
    return {"format": suffix.lstrip(".").lower(), "width": int(w), "height": int(h),
            "channels": 1 if img.ndim == 2 else int(img.shape[2]), "bit_depth": 8,
            "has_exif": False, "has_gps": False, "orientation": 1}


def _label_meta(data: bytes) -> dict[str, Any]:
    boxes = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        try:
            cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:])
        except ValueError:
            continue
        if cls >= 0 and 0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1:
            boxes.append([cls, cx, cy, w, h])
    return {"boxes": boxes, "n_boxes": len(boxes)}


def integrity_like_manifest(root: str | os.PathLike, out_dir: str | os.PathLike) -> StageResult:
    """A manifest with the integrity stage's record conventions, for tests and the benchmark."""
    root, out_dir = Path(root), Path(out_dir)
    records = []
    for entry in walk_dataset(root):
        if not entry.is_regular:
            continue
        data = (root / entry.relpath).read_bytes()
        meta: dict[str, Any] = {}
        if entry.kind == "image":
            meta = _image_meta(data, Path(entry.relpath).suffix)
        elif entry.kind == "label":
            meta = _label_meta(data)
        records.append(FileRecord(
            path=entry.relpath, sha256=sha256_hex(data), size=len(data), kind=entry.kind, split=entry.split,
            sample=entry.stem_key if entry.kind in ("image", "label") else None, meta=meta,
        ))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "manifest.jsonl"
    digest = write_manifest(path, {"stage": "integrity", "source": "integrity_like_manifest"}, records)
    return StageResult(stage="integrity", manifest_path=str(path), manifest_digest=digest,
                       counts=count_records(records), data_root=str(root))
