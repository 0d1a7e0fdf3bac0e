"""Quarantine: copy a rejected sample (image and label) with a machine-readable reason. Never delete.

The copy goes to the same relative path under the quarantine root, so a person can browse it
like the dataset. A path that cannot be stored there (not a safe relative path, not valid UTF-8,
or too long once the quarantine root and ``.reason.json`` are added to it) is stored under
``_unsafe_names/<sha256 of the path>`` instead; its reason file records the original path and
``stored_as``, the mapping.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from secure_data.dataset.atomic import atomic_write_bytes, atomic_write_text
from secure_data.dataset.layout import UnsafePathError, fits_under, safe_relpath
from secure_data.dataset.manifest import FileRecord, Reason, canonical_json

REASON_SUFFIX = ".reason.json"
UNSAFE_NAMES_DIR = "_unsafe_names"


def hashed_relpath(path: str) -> str:
    """``_unsafe_names/<sha256 of the path's UTF-8 bytes>``: where a path that cannot be stored as is goes."""
    return f"{UNSAFE_NAMES_DIR}/{hashlib.sha256(path.encode('utf-8', 'surrogateescape')).hexdigest()}"


def stored_relpath(quarantine_root: str | os.PathLike, path: str) -> str:
    """Where the copy of ``path`` lives inside ``quarantine_root`` (its reason file: that + REASON_SUFFIX)."""
    try:
        safe_relpath(path)
        path.encode("utf-8")
    except (UnsafePathError, UnicodeEncodeError):
        return hashed_relpath(path)
    # A dataset folder called _unsafe_names must not be able to overwrite the hashed entries.
    if path.split("/", 1)[0] == UNSAFE_NAMES_DIR or not fits_under(quarantine_root, path):
        return hashed_relpath(path)
    return path


def quarantine_file(
    quarantine_root: str | os.PathLike,
    record: FileRecord,
    data: bytes | None,
    reasons: Iterable[Reason],
    *,
    hashed: bool = False,
) -> Path:
    """Write ``data`` (the bytes already read and hashed; None if unreadable) and its reason file.

    The reason file is written last, so a reason file always means the copy is complete.
    ``hashed``: store under ``_unsafe_names/`` even if the path looks usable (e.g. the escaped
    stand-in of a name that is not UTF-8 on disk).
    """
    stored = hashed_relpath(record.path) if hashed else stored_relpath(quarantine_root, record.path)
    target = Path(quarantine_root).joinpath(*safe_relpath(stored).parts)
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
    if stored != record.path:
        reason_doc["stored_as"] = stored
    reason_path = target.with_name(target.name + REASON_SUFFIX)
    atomic_write_text(reason_path, canonical_json(reason_doc) + "\n")
    return reason_path
