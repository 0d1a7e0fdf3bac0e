"""Tamper diff: which input files were added, removed or modified since the last trusted manifest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from secure_data.dataset.manifest import FileRecord, Manifest, canonical_json

ADDED = "added"
REMOVED = "removed"
MODIFIED = "modified"


@dataclass(frozen=True)
class Change:
    change: str  # added | removed | modified
    path: str
    sha256: str | None  # now (None when removed)
    reference_sha256: str | None  # in the reference (None when added)
    sample: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"change": self.change, "path": self.path, "sha256": self.sha256,
                "reference_sha256": self.reference_sha256, "sample": self.sample}


def diff_records(current: Iterable[FileRecord], reference: Manifest) -> list[Change]:
    """Compare every input file (whatever its status) by path and SHA-256. Sorted by path."""
    ref: Mapping[str, FileRecord] = reference.by_path()
    now = {r.path: r for r in current}
    changes: list[Change] = []
    for path in sorted(now.keys() | ref.keys()):
        a, b = now.get(path), ref.get(path)
        if b is None:
            changes.append(Change(ADDED, path, a.sha256, None, a.sample))
        elif a is None:
            changes.append(Change(REMOVED, path, None, b.sha256, b.sample))
        elif a.sha256 != b.sha256 or a.size != b.size:
            changes.append(Change(MODIFIED, path, a.sha256, b.sha256, a.sample))
    return changes


def encode_diff(reference_digest: str, changes: Iterable[Change]) -> bytes:
    """Canonical JSON Lines: a header naming the reference, then one change per line."""
    lines = [canonical_json({"schema": "secure-data/tamper-diff/v1", "reference_digest": reference_digest})]
    lines += [canonical_json(c.to_dict()) for c in changes]
    return ("\n".join(lines) + "\n").encode("utf-8")
