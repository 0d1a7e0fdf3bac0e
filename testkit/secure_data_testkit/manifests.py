"""An upstream manifest over a folder, as the integrity stage would hand it on (for stage tests and benches)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from secure_data.dataset.layout import image_stem_key, parse_class_names, walk_dataset
from secure_data.dataset.manifest import FileRecord, count_records, write_manifest
from secure_data.dataset.stage import RunLayout, StageResult


def upstream_for(root: Path, layout: RunLayout, stage: str = "integrity") -> StageResult:
    """A manifest of every file under ``root`` (all accepted; data.yaml with its class names) and its StageResult."""
    root = Path(root)
    records = []
    for entry in walk_dataset(root):
        data = (root / entry.relpath).read_bytes()
        sample = image_stem_key(entry.relpath) if entry.kind in ("image", "label") else None
        meta: dict = {}
        if entry.kind == "image":
            meta = {"format": Path(entry.relpath).suffix.lstrip(".").lower()}
        elif entry.relpath == "data.yaml":
            meta = {"class_names": parse_class_names(data)}
        records.append(FileRecord(path=entry.relpath, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                  kind=entry.kind, split=entry.split, sample=sample, meta=meta))
    path = layout.stage(stage) / "manifest.jsonl"
    digest = write_manifest(path, {"stage": stage}, records)
    return StageResult(stage=stage, manifest_path=str(path), manifest_digest=digest,
                       counts=count_records(records), data_root=str(root))
