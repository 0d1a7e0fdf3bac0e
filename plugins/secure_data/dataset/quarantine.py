"""Quarantine: copy a rejected sample (image and label) with a machine-readable reason. Never delete."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from secure_data.dataset.atomic import atomic_write_bytes, atomic_write_text
from secure_data.dataset.layout import safe_relpath
from secure_data.dataset.manifest import FileRecord, Reason, canonical_json

REASON_SUFFIX = ".reason.json"


def quarantine_file(
    quarantine_root: str | os.PathLike,
    record: FileRecord,
    data: bytes | None,
    reasons: Iterable[Reason],
) -> Path:
    """Write ``data`` (the bytes already read and hashed; None if unreadable) and its reason file.

    The reason file is written last, so a reason file always means the copy is complete.
    """
    rel = safe_relpath(record.path)
    target = Path(quarantine_root) / rel
    if data is not None:
        atomic_write_bytes(target, data)
    reason_doc = {
        "path": record.path,
        "sha256": record.sha256,
        "size": record.size,
        "sample": record.sample,
        "copied": data is not None,
        "reasons": [r.to_dict() for r in reasons],
    }
    reason_path = target.with_name(target.name + REASON_SUFFIX)
    atomic_write_text(reason_path, canonical_json(reason_doc) + "\n")
    return reason_path
