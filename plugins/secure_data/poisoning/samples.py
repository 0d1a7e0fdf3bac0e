"""Samples as the poisoning stage sees them: an accepted image, its label record and its boxes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from secure_data.dataset.manifest import FileRecord

# [cls, cx, cy, w, h], YOLO-normalised, as the integrity stage writes them into label meta.
BoxTuple = tuple[int, float, float, float, float]

SPLIT_RANK = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def split_rank(split: str | None) -> int:
    """Training data ranks first: leakage is fixed by removing the copy from evaluation splits."""
    return SPLIT_RANK.get(split or "", 3)


@dataclass(frozen=True)
class Sample:
    key: str  # "<split>/<stem>"
    split: str | None
    image: FileRecord
    label: FileRecord | None
    boxes: tuple[BoxTuple, ...]

    @property
    def width(self) -> int | None:
        return _int_or_none(self.image.meta.get("width"))

    @property
    def height(self) -> int | None:
        return _int_or_none(self.image.meta.get("height"))


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_boxes(meta_boxes) -> tuple[BoxTuple, ...]:
    """Label meta ``boxes`` -> tuples; anything malformed is skipped (integrity already screened them)."""
    out: list[BoxTuple] = []
    for box in meta_boxes or ():
        try:
            cls, cx, cy, w, h = box
            out.append((int(cls), float(cx), float(cy), float(w), float(h)))
        except (TypeError, ValueError):
            continue
    return tuple(out)


def collect_samples(records: Iterable[FileRecord]) -> list[Sample]:
    """Pair every accepted image with its accepted label record (by ``sample``), sorted by key.

    An image without a label record is a background image (no boxes), as in YOLO.
    """
    images: dict[str, FileRecord] = {}
    labels: dict[str, FileRecord] = {}
    for rec in records:
        if not rec.accepted or rec.sample is None:
            continue
        if rec.kind == "image":
            images[rec.sample] = rec
        elif rec.kind == "label":
            labels[rec.sample] = rec
    out = []
    for key in sorted(images):
        label = labels.get(key)
        boxes = parse_boxes(label.meta.get("boxes")) if label is not None else ()
        out.append(Sample(key=key, split=images[key].split, image=images[key], label=label, boxes=boxes))
    return out
