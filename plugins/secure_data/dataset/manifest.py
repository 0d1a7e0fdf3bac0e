"""The versioned, canonical, streamable manifest every stage reads and writes.

Format (JSON Lines, UTF-8, ``\\n`` line ends):

* line 1: the header object, ``{"schema": "secure-data/manifest/v1", "stage": ..., ...}``
* then one :class:`FileRecord` per input file, sorted by ``path``.

Every object is serialised with sorted keys and no insignificant white space, and
nothing time- or host-dependent goes into a manifest, so the same input gives a
byte-identical file. Its digest (SHA-256 of the bytes, ``sha256:<hex>``) is what
later stages check and what the hand-off signs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secure_data.dataset.atomic import atomic_write_bytes
from secure_data.dataset.layout import open_inside

SCHEMA = "secure-data/manifest/v1"
ACCEPTED = "accepted"
QUARANTINED = "quarantined"
STATUSES = (ACCEPTED, QUARANTINED)


class IntegrityError(Exception):
    """Bytes on storage differ from what a manifest recorded (tampering or corruption)."""


class ManifestError(ValueError):
    """A manifest that cannot be parsed, has the wrong schema, or the wrong digest."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + sha256_hex(data)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Reason:
    """Why a file was quarantined or flagged: a stable machine code plus human detail."""

    code: str
    detail: str = ""
    stage: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail, "stage": self.stage}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reason:
        return cls(code=str(data["code"]), detail=str(data.get("detail", "")), stage=str(data.get("stage", "")))


@dataclass(frozen=True)
class FileRecord:
    """One input file as a stage saw it."""

    path: str  # POSIX path relative to the dataset root
    sha256: str  # hex of the exact bytes
    size: int
    kind: str  # image | label | meta | other
    split: str | None = None
    sample: str | None = None  # "<split>/<stem>": pairs an image with its label
    status: str = ACCEPTED
    reasons: tuple[Reason, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "kind": self.kind,
            "split": self.split,
            "sample": self.sample,
            "status": self.status,
            "reasons": [r.to_dict() for r in self.reasons],
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileRecord:
        return cls(
            path=data["path"],
            sha256=data["sha256"],
            size=int(data["size"]),
            kind=data["kind"],
            split=data.get("split"),
            sample=data.get("sample"),
            status=data.get("status", ACCEPTED),
            reasons=tuple(Reason.from_dict(r) for r in data.get("reasons", ())),
            meta=data.get("meta") or {},
        )

    def quarantined(self, *reasons: Reason) -> FileRecord:
        """A copy with status quarantined and the reasons appended."""
        return FileRecord(
            path=self.path, sha256=self.sha256, size=self.size, kind=self.kind, split=self.split,
            sample=self.sample, status=QUARANTINED, reasons=self.reasons + tuple(reasons), meta=self.meta,
        )

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


@dataclass(frozen=True)
class Manifest:
    header: Mapping[str, Any]
    records: tuple[FileRecord, ...]
    digest: str

    def by_path(self) -> dict[str, FileRecord]:
        return {r.path: r for r in self.records}

    def counts(self) -> dict[str, int]:
        return count_records(self.records)


def count_records(records: Iterable[FileRecord]) -> dict[str, int]:
    counts = {"files": 0, ACCEPTED: 0, QUARANTINED: 0, "images": 0, "images_accepted": 0}
    for r in records:
        counts["files"] += 1
        counts[r.status] += 1
        if r.kind == "image":
            counts["images"] += 1
            counts["images_accepted"] += r.accepted
    return counts


def encode_manifest(header: Mapping[str, Any], records: Iterable[FileRecord]) -> bytes:
    """Canonical bytes of a manifest. Records are sorted by path; duplicate paths are refused."""
    recs = sorted(records, key=lambda r: r.path)
    seen: set[str] = set()
    for r in recs:
        if r.path in seen:
            raise ManifestError(f"duplicate path in manifest: {r.path!r}")
        seen.add(r.path)
    head = {"schema": SCHEMA, **dict(header), "counts": count_records(recs)}
    buf = io.StringIO()
    buf.write(canonical_json(head) + "\n")
    for r in recs:
        buf.write(canonical_json(r.to_dict()) + "\n")
    return buf.getvalue().encode("utf-8")


def write_manifest(path: str | os.PathLike, header: Mapping[str, Any], records: Iterable[FileRecord]) -> str:
    """Write atomically; return the digest ``sha256:<hex>``. A ``<path>.sha256`` sidecar is written too."""
    data = encode_manifest(header, records)
    digest = digest_of(data)
    atomic_write_bytes(path, data)
    atomic_write_bytes(f"{path}.sha256", (digest + "\n").encode())
    return digest


def parse_manifest(data: bytes, *, expected_digest: str | None = None, source: str = "<bytes>") -> Manifest:
    digest = digest_of(data)
    if expected_digest is not None and digest != expected_digest:
        raise ManifestError(f"manifest {source} has digest {digest}, expected {expected_digest}")
    lines = data.decode("utf-8").splitlines()
    if not lines:
        raise ManifestError(f"manifest {source} is empty")
    header = json.loads(lines[0])
    if header.get("schema") != SCHEMA:
        raise ManifestError(f"manifest {source} has schema {header.get('schema')!r}, expected {SCHEMA!r}")
    records = tuple(FileRecord.from_dict(json.loads(line)) for line in lines[1:] if line)
    return Manifest(header=header, records=records, digest=digest)


def read_manifest(path: str | os.PathLike, *, expected_digest: str | None = None) -> Manifest:
    """Read a manifest, checking its digest when one is given (it should be, between stages)."""
    return parse_manifest(Path(path).read_bytes(), expected_digest=expected_digest, source=str(path))


def iter_manifest_records(path: str | os.PathLike) -> Iterator[FileRecord]:
    """Stream records without loading the whole file (digest not checked: use for reports only)."""
    with open(path, encoding="utf-8") as fh:
        header = json.loads(fh.readline())
        if header.get("schema") != SCHEMA:
            raise ManifestError(f"manifest {path} has schema {header.get('schema')!r}")
        for line in fh:
            if line.strip():
                yield FileRecord.from_dict(json.loads(line))


def verified_read(root: str | os.PathLike, record: FileRecord) -> bytes:
    """Read a file's bytes once and check them against the manifest before anyone uses them.

    Callers must use the returned bytes, never re-open the file: that closes the
    time-of-check/time-of-use gap.
    """
    with os.fdopen(open_inside(root, record.path), "rb") as fh:  # dir fds: no window between check and open
        data = fh.read()
    actual = sha256_hex(data)
    if actual != record.sha256 or len(data) != record.size:
        raise IntegrityError(
            f"{record.path}: sha256 {actual} ({len(data)} bytes) does not match manifest "
            f"{record.sha256} ({record.size} bytes)"
        )
    return data

