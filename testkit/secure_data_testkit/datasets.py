"""Seeded generator of small YOLO-layout datasets with two drawable classes.

``face``: a skin-toned ellipse with two dark eyes and a mouth; ``plate``: a light
rectangle with dark glyph bars. Simple enough for a tiny YOLO to learn in a
minute on a CPU, structured enough that blur/pixelation visibly destroys it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLASS_NAMES = ("face", "plate")


@dataclass(frozen=True)
class Box:
    cls: int
    x1: int
    y1: int
    x2: int
    y2: int

    def yolo_line(self, width: int, height: int) -> str:
        cx = (self.x1 + self.x2) / 2 / width
        cy = (self.y1 + self.y2) / 2 / height
        w = (self.x2 - self.x1) / width
        h = (self.y2 - self.y1) / height
        return f"{self.cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def draw_sample(rng, width: int, height: int, max_objects: int = 3):
    """Return (BGR uint8 image, [Box]) with 0..max_objects non-overlapping objects."""
    import cv2
    import numpy as np

    base = rng.integers(40, 200, size=3)
    img = np.clip(rng.normal(base, 18, size=(height, width, 3)), 0, 255).astype(np.uint8)
    # a few distractor lines so backgrounds are not flat
    for _ in range(int(rng.integers(1, 4))):
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(int(c) for c in rng.integers(0, 255, size=3))
        cv2.line(img, p1, p2, color, int(rng.integers(1, 3)))
    boxes: list[Box] = []
    n = int(rng.integers(1, max_objects + 1))
    short = min(width, height)
    for _ in range(n * 4):
        if len(boxes) >= n:
            break
        cls = int(rng.integers(0, len(CLASS_NAMES)))
        if cls == 0:
            bw = int(rng.integers(short // 6, short // 3))
            bh = int(bw * rng.uniform(1.1, 1.4))
        else:
            bh = int(rng.integers(short // 10, short // 6))
            bw = int(bh * rng.uniform(2.5, 3.5))
        if bw >= width - 2 or bh >= height - 2:
            continue
        x1 = int(rng.integers(1, width - bw - 1))
        y1 = int(rng.integers(1, height - bh - 1))
        cand = Box(cls, x1, y1, x1 + bw, y1 + bh)
        if any(not (cand.x2 < b.x1 or cand.x1 > b.x2 or cand.y2 < b.y1 or cand.y1 > b.y2) for b in boxes):
            continue
        _draw_object(img, cand, rng)
        boxes.append(cand)
    return img, boxes


def _draw_object(img, box: Box, rng) -> None:
    import cv2

    cx, cy = (box.x1 + box.x2) // 2, (box.y1 + box.y2) // 2
    w, h = box.x2 - box.x1, box.y2 - box.y1
    if box.cls == 0:
        skin = (int(rng.integers(60, 120)), int(rng.integers(120, 170)), int(rng.integers(180, 240)))
        cv2.ellipse(img, (cx, cy), (w // 2, h // 2), 0, 0, 360, skin, -1)
        er = max(1, w // 10)
        cv2.circle(img, (box.x1 + w // 3, box.y1 + h * 2 // 5), er, (30, 30, 30), -1)
        cv2.circle(img, (box.x1 + 2 * w // 3, box.y1 + h * 2 // 5), er, (30, 30, 30), -1)
        cv2.ellipse(img, (cx, box.y1 + h * 7 // 10), (w // 5, max(1, h // 12)), 0, 0, 180, (40, 40, 160), -1)
    else:
        cv2.rectangle(img, (box.x1, box.y1), (box.x2, box.y2), (235, 235, 235), -1)
        cv2.rectangle(img, (box.x1, box.y1), (box.x2, box.y2), (20, 20, 20), 1)
        n_glyphs = 6
        gw = w / (n_glyphs + 1)
        for i in range(n_glyphs):
            gx = int(box.x1 + gw * (i + 0.5))
            cv2.rectangle(img, (gx, box.y1 + h // 4), (gx + max(1, int(gw * 0.6)), box.y2 - h // 4),
                          (int(rng.integers(0, 60)),) * 3, -1)


def make_yolo_dataset(
    root: str | os.PathLike,
    *,
    n_train: int = 16,
    n_val: int = 4,
    n_test: int = 0,
    width: int = 160,
    height: int = 160,
    seed: int = 0,
    jpeg_quality: int = 92,
    max_objects: int = 3,
) -> Path:
    """Write a YOLO-layout dataset under ``root`` and return it."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(root)
    splits = {"train": n_train, "val": n_val, "test": n_test}
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    split_lines = "".join(f"{s}: images/{s}\n" for s, n in splits.items() if n)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(f"path: .\n{split_lines}names:\n{names}\n")
    for split, count in splits.items():
        if not count:
            continue
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, boxes = draw_sample(rng, width, height, max_objects)
            stem = f"{split}_{i:05d}"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            assert ok
            (root / "images" / split / f"{stem}.jpg").write_bytes(buf.tobytes())
            (root / "labels" / split / f"{stem}.txt").write_text(
                "".join(b.yolo_line(width, height) + "\n" for b in boxes)
            )
    return root


def stage_result_for(dataset: str | os.PathLike, out: str | os.PathLike, *, quarantine: set[str] | frozenset[str] = (),
                     name: str = "anonymize"):
    """A stage manifest over every file of ``dataset`` (those in ``quarantine`` marked quarantined) and its
    ``StageResult``: what a stage hands the next one, for hand-off tests without running the chain."""
    from secure_data.dataset.layout import classify, walk_dataset
    from secure_data.dataset.manifest import FileRecord, Reason, sha256_hex, write_manifest
    from secure_data.dataset.stage import StageResult

    dataset, out = Path(dataset), Path(out)
    records = []
    for entry in walk_dataset(dataset):
        data = (dataset / entry.relpath).read_bytes()
        kind, split = classify(entry.relpath)
        rec = FileRecord(path=entry.relpath, sha256=sha256_hex(data), size=len(data), kind=kind, split=split)
        records.append(rec.quarantined(Reason("test", "", name)) if entry.relpath in quarantine else rec)
    path = out / f"{name}.jsonl"
    digest = write_manifest(path, {"stage": name}, records)
    return StageResult(stage=name, manifest_path=str(path), manifest_digest=digest, counts={},
                       data_root=str(dataset))
