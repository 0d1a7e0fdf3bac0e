"""Findings: what a check saw, which samples it blames, and the evidence, as canonical JSON Lines."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from secure_data.dataset.atomic import atomic_write_bytes
from secure_data.dataset.manifest import canonical_json, digest_of


@dataclass(frozen=True)
class Finding:
    """One observation of one check.

    ``suspects`` are the samples the check blames (the ones a quarantine policy acts
    on); ``involved`` are all samples the evidence mentions (suspects included), e.g.
    the clean original a flipped copy was made from.
    """

    check: str
    suspects: tuple[str, ...]
    involved: tuple[str, ...]
    evidence: Mapping[str, Any]
    message: str
    action: str = ""  # filled in by the stage from the policy

    @property
    def finding_id(self) -> str:
        """Stable across runs on the same data: check + involved samples + evidence."""
        body = canonical_json({"check": self.check, "involved": sorted(self.involved), "evidence": self.evidence})
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.finding_id,
            "check": self.check,
            "action": self.action,
            "message": self.message,
            "suspects": sorted(self.suspects),
            "involved": sorted(self.involved),
            "evidence": plain(self.evidence),
        }


def make_finding(
    check: str, *, suspects: Iterable[str], involved: Iterable[str] = (), evidence: Mapping[str, Any],
    message: str,
) -> Finding:
    sus = tuple(sorted(set(suspects)))
    inv = tuple(sorted(set(involved) | set(sus)))
    return Finding(check=check, suspects=sus, involved=inv, evidence=plain(evidence), message=message)


def plain(value: Any) -> Any:
    """NumPy scalars/arrays and tuples -> JSON types; floats rounded so outputs are byte-stable."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(v) for v in value]
        return sorted(items, key=canonical_json) if isinstance(value, set | frozenset) else items
    if hasattr(value, "tolist"):  # numpy scalar or array
        return plain(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return round(value, 6)
    return str(value)


@dataclass(frozen=True)
class FindingsFile:
    path: str
    digest: str
    by_check: Mapping[str, int] = field(default_factory=dict)


def write_findings(path: str | os.PathLike, findings: Iterable[Finding]) -> FindingsFile:
    """Canonical JSONL (sorted by check, then id), written atomically; returns path + digest."""
    rows = sorted((f.to_dict() for f in findings), key=lambda d: (d["check"], d["id"]))
    data = "".join(canonical_json(r) + "\n" for r in rows).encode("utf-8")
    atomic_write_bytes(path, data)
    by_check: dict[str, int] = {}
    for r in rows:
        by_check[r["check"]] = by_check.get(r["check"], 0) + 1
    return FindingsFile(path=str(path), digest=digest_of(data), by_check=by_check)


def read_findings(path: str | os.PathLike) -> list[dict[str, Any]]:
    import json

    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
