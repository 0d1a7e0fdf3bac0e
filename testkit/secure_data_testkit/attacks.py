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
from collections.abc import Collection
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
    if kind == "resize":  # a few % smaller or larger; normalised boxes stay
        f = float(rng.choice([rng.uniform(0.85, 0.96), rng.uniform(1.04, 1.2)]))
        size = (max(8, int(round(w * f))), max(8, int(round(h * f))))
        return _encode(cv2.resize(img, size, interpolation=cv2.INTER_AREA), int(rng.integers(80, 96))), \
            [list(b) for b in boxes]
    if kind == "flip":  # mirror image, mirrored boxes
        return _encode(np.ascontiguousarray(img[:, ::-1])), [[c, 1.0 - cx, cy, bw, bh] for c, cx, cy, bw, bh in boxes]
    if kind == "colour":  # hue, saturation and brightness shift
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-10, 11))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.75, 1.25), 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.85, 1.15), 0, 255)
        return _encode(cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)), [list(b) for b in boxes]
    if kind == "shift_mix":  # shifted a few pixels (reflected border), brightened, re-encoded
        dx, dy = (int(v) * int(rng.choice([-1, 1])) for v in rng.integers(2, 7, size=2))
        moved_img = cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
        moved_img = cv2.convertScaleAbs(moved_img, alpha=float(rng.uniform(1.0, 1.12)), beta=float(rng.uniform(0, 12)))
        moved = [[c, cx + dx / w, cy + dy / h, bw, bh] for c, cx, cy, bw, bh in boxes]
        return _encode(moved_img, int(rng.integers(70, 90))), moved
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
    from secure_data_testkit.datasets import make_yolo_dataset

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
    copy_kinds: tuple[str, ...] = COPY_KINDS,
) -> AttackedDataset:
    """Copy ``clean_root`` to ``out_root`` and poison ``round(rate * n_images)`` samples.

    ``copy_kinds``: how ``label_flip`` / ``split_leak`` copies are made (one drawn per copy), from
    :data:`COPY_KINDS` and :data:`COPY_TRANSFORMS`.
    """
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
            kind = copy_kinds[int(rng.integers(0, len(copy_kinds)))]
            data, boxes = near_copy(s_img.read_bytes(), _read_boxes(s_lbl), kind, rng, crop_max)
            if attack == "label_flip":
                boxes = [[(int(b[0]) + 1) % n_classes, *b[1:]] for b in boxes]
            d_img, d_lbl = paths(slot)
            d_img.write_bytes(data)
            _write_boxes(d_lbl, boxes)
            kinds.append(kind)
        poisoned, sources = set(slots), set(srcs)
        details["copy_kinds"] = {kd: kinds.count(kd) for kd in copy_kinds}
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


# ---------------------------------------------------------------- attacks nobody here wrote (IBM ART BadDet)
#
# The attacks above are this project's own. The BadDet attacks below are IBM ART's implementations
# (adversarial-robustness-toolbox, pinned in the test extra), driven on our datasets: the poisoning
# itself (which images, where the trigger goes, which labels change) is ART's code and its RNG.

ART_ATTACKS = ("baddet_oga", "baddet_rma", "baddet_gma", "baddet_oda")
# kind -> (trigger side as a multiple of trigger_px, ART insert_image blend factor)
TRIGGER_KINDS = {"patch": (1.0, 1.0), "blended": (1.5, 0.5)}
# the trigger picture each kind gets in the benchmarks: a two-colour checkerboard stamped opaque, the
# scikit-image logo blended, and the same logo without its colour (lightness only) blended
BENCH_TRIGGERS = {"patch": ("patch", "checker"), "blended": ("blended", "logo"), "blended_grey": ("blended", "logo_grey")}
# Copy transforms an attacker uses to hide a copy from exact / pHash matching.
COPY_TRANSFORMS = ("resize", "crop", "reencode", "flip", "colour", "shift_mix")

# Real photographs that ship inside wheels this project installs (no download): Ultralytics assets,
# scikit-learn sample images, Matplotlib sample data, scikit-image data.
PHOTO_SOURCES = (
    ("ultralytics", "assets/bus.jpg"), ("ultralytics", "assets/zidane.jpg"),
    ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("skimage", "data/astronaut.png"), ("skimage", "data/chelsea.png"), ("skimage", "data/coffee.png"),
    ("skimage", "data/motorcycle_left.png"), ("skimage", "data/rocket.jpg"), ("skimage", "data/camera.png"),
    ("skimage", "data/coins.png"), ("skimage", "data/moon.png"), ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"), ("skimage", "data/brick.png"), ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/retina.jpg"), ("skimage", "data/color.png"),
)


def photo_paths(exclude: Collection[str] = ()) -> list[Path]:
    """The shipped photographs that are installed here (a missing package just contributes none).

    ``exclude``: file names to leave out (e.g. :func:`model_negative_photos`: photographs a detector
    under test was trained on must not be backgrounds of the data it is judged on)."""
    import importlib.util

    out = []
    for package, rel in PHOTO_SOURCES:
        if Path(rel).name in exclude:
            continue
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.origin:
            continue
        path = Path(spec.origin).parent / rel
        if path.is_file():
            out.append(path)
    return out


def model_negative_photos() -> frozenset[str]:
    """File names (of :data:`PHOTO_SOURCES`) of the photographs the demo detector sees as background
    negatives (``secure_data_testkit.models.NEGATIVE_PHOTOS``, scikit-image data names)."""
    from secure_data_testkit.models import NEGATIVE_PHOTOS

    return frozenset(_SKIMAGE_FILES[n] for n in NEGATIVE_PHOTOS)  # KeyError: a new negative needs its file here


# scikit-image data function -> the file it loads (the names differ: colorwheel() is color.png)
_SKIMAGE_FILES = {
    "brick": "brick.png", "gravel": "gravel.png", "grass": "grass.png", "stereo_motorcycle": "motorcycle_left.png",
    "hubble_deep_field": "hubble_deep_field.jpg", "coins": "coins.png", "page": "page.png", "text": "text.png",
    "moon": "moon.png", "immunohistochemistry": "ihc.png", "retina": "retina.jpg", "cell": "cell.png",
    "colorwheel": "color.png",
}


def _load_photos(exclude: Collection[str] = ()):
    import cv2

    photos = []
    for p in photo_paths(exclude):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None and min(img.shape[:2]) >= 96:
            photos.append(img)
    if len(photos) < 4:
        raise RuntimeError("fewer than 4 shipped photographs found: install the test extra (scikit-image etc.)")
    return photos


def make_photo_dataset(root: str | os.PathLike, *, n_train: int = 480, n_val: int = 120, size: int = 224,
                       seed: int = 0, max_objects: int = 3, jpeg_quality: int = 92,
                       exclude_photos: Collection[str] = ()) -> Path:
    """A YOLO dataset on real photographs: each image a random crop (scale, position, mirror) of a shipped
    photograph, with 1..max_objects of the generator's objects drawn on it and labelled.

    The photographs carry the real-image statistics (texture, sky, sensor noise, JPEG history) the
    checks must not mistake for a trigger or a copy; the drawn objects are what the labels describe
    (no labelled real photographs ship in a wheel). ``exclude_photos``: as :func:`photo_paths`.
    """
    import cv2
    import numpy as np

    from secure_data_testkit.datasets import CLASS_NAMES, _draw_object, draw_sample

    photos = _load_photos(exclude_photos)
    rng = np.random.default_rng([seed, 7])
    root = Path(root)
    (root / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    for split, count in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            photo = photos[int(rng.integers(0, len(photos)))]
            h, w = photo.shape[:2]
            side = int(min(h, w) * rng.uniform(0.3, 0.8))
            x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            img = cv2.resize(photo[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
            if rng.random() < 0.5:
                img = np.ascontiguousarray(img[:, ::-1])
            # the generator's object placement (boxes), drawn on the photograph instead of its background
            _, boxes = draw_sample(rng, size, size, max_objects)
            for box in boxes:
                _draw_object(img, box, rng)
            stem = f"{split}_{i:05d}"
            (root / "images" / split / f"{stem}.jpg").write_bytes(_encode(img, jpeg_quality))
            (root / "labels" / split / f"{stem}.txt").write_text(
                "".join(b.yolo_line(size, size) + "\n" for b in boxes))
    return root


def trigger_image(path: str | os.PathLike, kind: str = "logo", seed: int = 0) -> Path:
    """Write a trigger picture (RGBA PNG) for ART's ``insert_image``: ``logo`` is scikit-image's logo
    (shipped in its wheel), ``logo_grey`` the same in grey levels, ``checker`` a seeded two-colour 4x4
    checkerboard."""
    import cv2
    import numpy as np

    path = Path(path)
    if kind in ("logo", "logo_grey"):
        import importlib.util

        spec = importlib.util.find_spec("skimage")
        src = Path(spec.origin).parent / "data" / "logo.png" if spec and spec.origin else None
        img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED) if src else None
        if img is None:
            raise RuntimeError("scikit-image's data/logo.png not found: install the test extra")
        if img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
        img[..., 3] = 255  # opaque: a patch, not a cut-out
        if kind == "logo_grey":
            img[..., :3] = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)[..., None]
    elif kind == "checker":
        rng = np.random.default_rng(seed + 104729)
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        while np.abs(a.astype(int) - b.astype(int)).sum() < 300:
            b = rng.integers(0, 256, 3)
        cells = (np.indices((4, 4)).sum(0) % 2).astype(bool)
        img = np.where(cells[..., None], a, b).astype(np.uint8)
        img = cv2.cvtColor(cv2.resize(img, (64, 64), interpolation=cv2.INTER_NEAREST), cv2.COLOR_BGR2BGRA)
    else:
        raise ValueError(f"unknown trigger picture {kind!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def inject_art_attack(
    clean_root: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    attack: str,
    rate: float,
    trigger: str = "patch",
    trigger_picture: str = "checker",
    trigger_px: int = 12,
    seed: int = 0,
    class_source: int = 0,
    class_target: int = 1,
    jpeg_quality: int = 92,
) -> AttackedDataset:
    """Copy ``clean_root`` and poison its train split with one of IBM ART's BadDet attacks.

    ``round(rate * n_images)`` train images are poisoned (ART's ``percent_poison`` is set so; the
    source-class attacks pick among images holding ``class_source``). The trigger is ART's
    ``insert_image`` at a random position (inside the box it poisons for RMA/ODA/OGA, anywhere in
    the image for GMA), opaque (``patch``) or blended at 0.5 over a 1.5x larger area (``blended``).
    """
    import numpy as np
    from art.attacks.poisoning import (
        BadDetGlobalMisclassificationAttack,
        BadDetObjectDisappearanceAttack,
        BadDetObjectGenerationAttack,
        BadDetRegionalMisclassificationAttack,
        PoisoningAttackBackdoor,
    )
    from art.attacks.poisoning.perturbations import insert_image

    if attack not in ART_ATTACKS:
        raise ValueError(f"unknown ART attack {attack!r}; known: {ART_ATTACKS}")
    if trigger not in TRIGGER_KINDS:
        raise ValueError(f"unknown trigger kind {trigger!r}; known: {tuple(TRIGGER_KINDS)}")
    clean_root, out_root = Path(clean_root), Path(out_root)
    shutil.copytree(clean_root, out_root)
    splits = _samples(out_root)
    n_total = sum(len(v) for v in splits.values())
    keys = [f"train/{s}" for s in splits.get("train", [])]
    k = int(round(rate * n_total))
    scale, blend = TRIGGER_KINDS[trigger]
    px = max(4, int(round(trigger_px * scale)))
    picture = trigger_image(out_root.parent / f".{out_root.name}-trigger.png", trigger_picture, seed)

    def paths(key: str) -> tuple[Path, Path]:
        split, stem = key.split("/", 1)
        return _paths(out_root, split, stem)

    images, labels = [], []
    for key in keys:
        img_path, lbl_path = paths(key)
        img = _decode(img_path)[..., ::-1].astype(np.float32) / 255.0  # ART works on RGB in [0, 1]
        h, w = img.shape[:2]
        boxes = _read_boxes(lbl_path)
        xyxy = np.array([[(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
                         for _, cx, cy, bw, bh in boxes], np.float32).reshape(-1, 4)
        images.append(img)
        labels.append({"boxes": xyxy, "labels": np.array([int(b[0]) for b in boxes], np.int64)})

    def perturb(x):
        # ART's perturbation: the trigger picture at a random position of what it is given (an image
        # or a box crop), blended; a box smaller than the trigger gets a trigger of its size.
        side = min(px, x.shape[1], x.shape[2])
        return insert_image(x, backdoor_path=str(picture), random=True, size=(side, side), mode="RGB", blend=blend)

    backdoor = PoisoningAttackBackdoor(perturb)
    if attack in ("baddet_rma", "baddet_oda"):
        pool = [i for i, y in enumerate(labels) if class_source in y["labels"]]
    else:
        pool = list(range(len(keys)))
    if k > len(pool):
        raise ValueError(f"{attack} at rate {rate} needs {k} images; only {len(pool)} qualify")
    percent = min(1.0, (k + 0.5) / len(pool))  # ART takes int(percent * len(pool)) == k
    if attack == "baddet_oga":
        box_side = px * 2
        art = BadDetObjectGenerationAttack(backdoor, bbox_height=box_side, bbox_width=box_side,
                                           class_target=class_target, percent_poison=percent)
    elif attack == "baddet_rma":
        art = BadDetRegionalMisclassificationAttack(backdoor, class_source=class_source, class_target=class_target,
                                                    percent_poison=percent)
    elif attack == "baddet_gma":
        art = BadDetGlobalMisclassificationAttack(backdoor, class_target=class_target, percent_poison=percent)
    else:
        art = BadDetObjectDisappearanceAttack(backdoor, class_source=class_source, percent_poison=percent)
    state = np.random.get_state()
    np.random.seed([seed, ART_ATTACKS.index(attack), int(round(rate * 1000)), len(trigger)])
    try:
        x_poison, y_poison = art.poison(images, labels)
    finally:
        np.random.set_state(state)
    poisoned = set()
    for key, x0, y0, x1, y1 in zip(keys, images, labels, x_poison, y_poison, strict=True):
        img_changed = float(np.abs(x1 - x0).max()) > 2.5 / 255  # ART's float->uint8 round trip moves 1 level
        lab_changed = (len(y1["labels"]) != len(y0["labels"]) or not np.array_equal(y1["labels"], y0["labels"]))
        if not (img_changed or lab_changed):
            continue  # not selected by ART: the original bytes stay
        img_path, lbl_path = paths(key)
        h, w = x1.shape[:2]
        out = np.clip(np.rint(x1 * 255), 0, 255).astype(np.uint8)[..., ::-1]
        img_path.write_bytes(_encode(np.ascontiguousarray(out), jpeg_quality))
        _write_boxes(lbl_path, [
            [int(c), (bx1 + bx2) / 2 / w, (by1 + by2) / 2 / h, (bx2 - bx1) / w, (by2 - by1) / h]
            for c, (bx1, by1, bx2, by2) in zip(y1["labels"].tolist(), y1["boxes"].tolist(), strict=True)
        ])
        poisoned.add(key)
    return AttackedDataset(root=out_root, attack=attack, rate=rate, poisoned=frozenset(poisoned), n_samples=n_total,
                           details={"k": k, "n_images": n_total, "trigger": trigger, "trigger_picture": trigger_picture,
                                    "trigger_px": px, "blend": blend, "library": "adversarial-robustness-toolbox"})
