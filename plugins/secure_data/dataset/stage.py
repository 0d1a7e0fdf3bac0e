"""What a stage hands to the next one: paths, digests and counts, never secrets or pixels."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def run_dir_name(run_id: str) -> str:
    """A filesystem-safe, collision-resistant folder name for an Airflow run id."""
    import hashlib

    safe = _UNSAFE.sub("_", run_id)[:80]
    return f"{safe}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class RunLayout:
    """The run-scoped directory every stage of one DAG run writes under."""

    root: Path

    @classmethod
    def for_run(cls, output_root: str | Path, dag_id: str, run_id: str) -> RunLayout:
        return cls(Path(output_root) / dag_id / run_dir_name(run_id))

    def stage(self, name: str) -> Path:
        return self.root / name

    def quarantine(self, stage: str) -> Path:
        return self.root / "quarantine" / stage

    @property
    def report(self) -> Path:
        return self.root / "report"


@dataclass(frozen=True)
class StageResult:
    """The XCom value of every stage operator: JSON-serialisable, non-secret."""

    stage: str
    manifest_path: str
    manifest_digest: str
    counts: Mapping[str, int]
    data_root: str  # where the accepted files of this stage live (input root for integrity)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "manifest_path": self.manifest_path,
            "manifest_digest": self.manifest_digest,
            "counts": dict(self.counts),
            "data_root": self.data_root,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> StageResult:
        return cls(
            stage=value["stage"],
            manifest_path=value["manifest_path"],
            manifest_digest=value["manifest_digest"],
            counts=value.get("counts", {}),
            data_root=value["data_root"],
            extra=value.get("extra", {}),
        )
