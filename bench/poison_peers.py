"""Peers of the poisoning screen, run on the same dataset as ours (bench/poison_attacks.py --suite outside).

* CleanVision 0.3.7 (``Imagelab``: exact and near duplicates). It knows no labels; a sample is
  counted as flagged by it as a user would act on its duplicate sets: a set that spans splits
  flags its members outside train (the leak rule ours uses); a set whose members' label files
  disagree (class multiset) flags every member.
* cleanlab 2.9.0 ``cleanlab.object_detection.filter.find_label_issues`` with the predictions of the
  pinned demo detector (the same model our presence checks use), at score >= 0.01.

fastdup 2.54 (numpy<2) and FiftyOne 1.22.1 (cachetools<8) do not install against this project's
lock, so they are not run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def _label_classes(path: Path) -> tuple[int, ...]:
    if not path.exists():
        return ()
    return tuple(sorted(int(line.split()[0]) for line in path.read_text().splitlines() if line.strip()))


def _items(root: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for img in sorted((root / "images").glob("*/*")):
        split = img.parent.name
        out.append((f"{split}/{img.stem}", img, root / "labels" / split / f"{img.stem}.txt"))
    return out


def cleanvision_flags(root: Path) -> set[str]:
    import logging

    from cleanvision import Imagelab

    logging.getLogger("cleanvision").setLevel(logging.ERROR)
    items = _items(root)
    key_of = {str(p): k for k, p, _ in items}
    label_of = {k: _label_classes(lbl) for k, _, lbl in items}
    lab = Imagelab(filepaths=[str(p) for _, p, _ in items], verbose=False)
    lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}}, n_jobs=1, verbose=False)
    flagged: set[str] = set()
    for issue in ("exact_duplicates", "near_duplicates"):
        for group in lab.info.get(issue, {}).get("sets", []):
            keys = [key_of[str(p)] for p in group if str(p) in key_of]
            splits = {k.split("/", 1)[0] for k in keys}
            if len(splits) > 1:
                flagged |= {k for k in keys if not k.startswith("train/")}
            if len({label_of[k] for k in keys}) > 1:
                flagged |= set(keys)
    return flagged


class DetectorCache:
    """The demo detector's predictions per image content (SHA-256): an attacked copy of a dataset only
    costs the images the attack rewrote."""

    def __init__(self, config, class_names: dict[int, str]) -> None:
        from dataclasses import replace

        from secure_data.poisoning.presence import PresenceDetector

        self.detector = PresenceDetector(replace(config, presence_low_conf=0.01), class_names)
        self.n_classes = len(class_names)
        self.cache: dict[str, list] = {}

    def predictions(self, paths: list[Path]) -> list[list]:
        import cv2

        keys = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
        todo = [(k, p) for k, p in zip(keys, paths, strict=True) if k not in self.cache]
        for start in range(0, len(todo), 64):
            part = todo[start:start + 64]
            imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for _, p in part]
            for (k, _), dets in zip(part, self.detector.detect(imgs), strict=True):
                self.cache[k] = dets
        return [self.cache[k] for k in keys]


def cleanlab_flags(root: Path, detector: DetectorCache) -> set[str]:
    import numpy as np
    from cleanlab.object_detection.filter import find_label_issues

    items = _items(root)
    preds_raw = detector.predictions([p for _, p, _ in items])
    labels, predictions = [], []
    import cv2

    for (_, img_path, lbl), dets in zip(items, preds_raw, strict=True):
        h, w = cv2.imread(str(img_path), cv2.IMREAD_COLOR).shape[:2]
        boxes, classes = [], []
        if lbl.exists():
            for line in lbl.read_text().splitlines():
                parts = line.split()
                if len(parts) == 5:
                    c, cx, cy, bw, bh = int(parts[0]), *map(float, parts[1:])
                    boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
                    classes.append(c)
        labels.append({"bboxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(classes, np.int64)})
        per_class = []
        for c in range(detector.n_classes):
            rows = [[d[0], d[1], d[2], d[3], d[4]] for d in dets if d[5] == c]
            per_class.append(np.array(rows, np.float32).reshape(-1, 5))
        predictions.append(per_class)
    mask = find_label_issues(labels, predictions)
    return {items[i][0] for i in np.flatnonzero(mask)}
