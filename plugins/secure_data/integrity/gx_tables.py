"""The metadata tables the Great Expectations suite validates (images, splits, classes).

Only what is still in the running counts towards the dataset-level expectations: an image is a
candidate unless its sample was already rejected by a file-level finding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from secure_data.integrity import codes
from secure_data.integrity.codes import ACCEPT, FAIL, QUARANTINE, WARN, FileFinding
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.files import FileResult
from secure_data.integrity.policy import action_for, rejected_samples, worst_action


def gx_tables(results: Mapping[str, FileResult], findings: Mapping[str, list[FileFinding]],
               class_names: list[str], config: IntegrityConfig):
    rejected, bad_samples = rejected_samples(results, findings, config)
    label_of: dict[str, FileResult] = {}
    for res in results.values():
        if res.record.kind == "label" and res.record.sample is not None:
            label_of[res.record.sample] = res
    images: list[dict[str, Any]] = []
    split_counts: Counter[str] = Counter()
    class_counts: Counter[int] = Counter()
    splits_seen: set[str] = set()
    for path in sorted(results):
        rec = results[path].record
        if rec.kind != "image":
            continue
        own = [f for f in findings.get(path, []) if f.code not in {
            codes.IMAGE_WITHOUT_LABEL, codes.TAMPER_ADDED, codes.TAMPER_MODIFIED, codes.TAMPER_REMOVED,
            codes.AMBIGUOUS_SAMPLE}]
        image_ok = worst_action(own, config) not in (QUARANTINE, FAIL)
        label = label_of.get(rec.sample or "")
        if label is None:
            label_ok = action_for(codes.IMAGE_WITHOUT_LABEL, config) in (WARN, ACCEPT)
        else:
            label_ok = label.record.path not in rejected
        candidate = rec.sample not in bad_samples
        if rec.split:
            splits_seen.add(rec.split)
        if candidate and rec.split:
            split_counts[rec.split] += 1
            if label is not None:
                for box in label.record.meta.get("boxes", []):
                    class_counts[int(box[0])] += 1
        m = rec.meta
        images.append({
            "key": path, "split": rec.split, "sample": rec.sample, "sha256": rec.sha256, "format": m.get("format"),
            "width": m.get("width"), "height": m.get("height"), "channels": m.get("channels"),
            "bit_depth": m.get("bit_depth"), "size": rec.size, "candidate": candidate,
            "image_ok": int(image_ok), "label_ok": int(label_ok), "n_boxes": int(label.record.meta.get("n_boxes", 0))
            if label is not None else 0,
        })
    splits = [{"key": s, "n_images": split_counts.get(s, 0)} for s in sorted(splits_seen)]
    classes = [{"key": name, "class_id": i, "n_boxes": class_counts.get(i, 0)} for i, name in enumerate(class_names)]
    return images, splits, classes
