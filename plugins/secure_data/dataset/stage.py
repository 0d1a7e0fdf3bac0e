"""What a stage hands to the next one: paths, digests and counts, never secrets or pixels.

The stage contract, typed: a :class:`StageResult` carries :class:`StageCounts` (the manifest's
counts) and one figures record per stage (:class:`IntegrityFigures`, :class:`PoisoningFigures`,
:class:`AnonymizeFigures`, :class:`HandoffFigures`). Writers build the records, readers (the
next stage, the report, the hand-off, lineage) read their fields, so a renamed figure is a
``TypeError`` at the writer, not a silently empty tile in the report. On the wire (XCom) a result
is the same JSON dict as before: ``{"stage", "manifest_path", "manifest_digest", "counts",
"data_root", "extra"}``; a known stage's ``extra`` with a key its record does not declare is refused.

The stage skeleton every stage follows: :func:`open_upstream` (read the upstream manifest, digest
checked) -> per-stage checks -> quarantine copies -> :func:`finish_stage` (write the manifest last,
count, check accepted + quarantined = input, build the result, raise :class:`StageFailed` carrying
the result when a check with policy ``fail`` fired).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from secure_data.dataset.manifest import FileRecord, Manifest

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


class _Record(Mapping[str, Any]):
    """A frozen dataclass of figures that also reads as a mapping (``dict(r)``, ``r["x"]``, ``r.get``).

    Fields left ``None`` are "not reported" and absent from the dict form.
    """

    strict: ClassVar[bool] = True  # refuse keys the record does not declare

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = dict(value) if isinstance(value, Mapping) else (
                    list(value) if isinstance(value, tuple) else value)
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None):
        value = dict(value or {})
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(value) - known)
        if unknown and cls.strict:
            raise ValueError(f"{cls.__name__}: undeclared field(s) {unknown} (declare them in "
                             "secure_data.dataset.stage: readers only see declared figures)")
        return cls(**{k: v for k, v in value.items() if k in known})

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=False)  # Mapping's equality: equal to a dict with the same items
class StageCounts(_Record):
    """A stage manifest's counts (``count_records``), plus integrity's per-kind extras."""

    files: int = 0
    accepted: int | None = None  # None: a stage without per-file statuses (the hand-off package)
    quarantined: int | None = None
    images: int | None = None
    images_accepted: int | None = None
    warned: int | None = None  # integrity: accepted files that carry a warning
    labels: int | None = None
    labels_accepted: int | None = None
    bytes: int | None = None  # hand-off: plaintext and ciphertext bytes in the package
    ciphertext_bytes: int | None = None

    @classmethod
    def of(cls, records: Iterable[FileRecord]) -> StageCounts:
        from secure_data.dataset.manifest import count_records

        return cls.from_dict(count_records(records))


@dataclass(frozen=True, eq=False)  # Mapping's equality: equal to a dict with the same items
class IntegrityFigures(_Record):
    verdict: str = "pass"  # pass | warn | fail
    gx_success: bool | None = None
    gx_data_docs: str | None = None  # Great Expectations data docs index, when built
    quarantine_dir: str | None = None
    tamper_diff: str | None = None  # the added/removed/modified diff against the reference, when given
    reference_digest: str | None = None


@dataclass(frozen=True, eq=False)  # Mapping's equality: equal to a dict with the same items
class PoisoningFigures(_Record):
    findings_path: str | None = None
    findings_digest: str | None = None
    findings_by_check: Mapping[str, int] = field(default_factory=dict)
    quarantined_samples: int = 0
    failed_checks: tuple[str, ...] | list[str] = ()
    drift_path: str | None = None


@dataclass(frozen=True, eq=False)  # Mapping's equality: equal to a dict with the same items
class AnonymizeFigures(_Record):
    """The merged anonymization stage's figures (the audit's totals and the shards' throughput)."""

    audit_path: str | None = None
    audit_digest: str | None = None
    shards: int | None = None
    params_sha256: tuple[str, ...] | list[str] = ()
    # None: not reported (the report shows a dash, not a zero that was never measured)
    images: int | None = None
    anonymized: int | None = None
    quarantined: int | None = None
    boxes: int | None = None
    residual_first_pass: int | None = None
    residual_detections: int | None = None  # still found after the last pass: those images are withheld
    reobfuscated_images: int | None = None
    quarantined_residual: int | None = None
    withheld: int | None = None
    boxes_per_class: Mapping[str, int] = field(default_factory=dict)
    boxes_per_source: Mapping[str, int] = field(default_factory=dict)
    area_obfuscated: float | None = None
    area_outside_labels: float | None = None
    images_per_second: float | None = None
    processed: int | None = None
    device: str | None = None
    detectors: list[Mapping[str, Any]] | None = None
    verifiers: list[Mapping[str, Any]] | None = None
    independent: Mapping[str, Any] | None = None
    self_checked: Mapping[str, Any] | None = None
    step_seconds: Mapping[str, float] | None = None


@dataclass(frozen=True, eq=False)  # Mapping's equality: equal to a dict with the same items
class HandoffFigures(_Record):
    """The published package (``PackageInfo.to_dict()``) and the run's signed provenance, if any."""

    package_uri: str | None = None
    package_id: str | None = None
    name: str | None = None
    manifest_digest: str | None = None
    content_digest: str | None = None
    key_name: str | None = None
    key_version: int | None = None
    counts: Mapping[str, int] | None = None
    upstream: Mapping[str, Any] | None = None
    signatures: Mapping[str, Any] | None = None
    provenance_uri: str | None = None
    provenance_digest: str | None = None


@dataclass(frozen=True, eq=False)  # Mapping's equality: equal to a dict with the same items
class OtherFigures(_Record):
    """Figures of a stage this module does not know (a custom stage): free keys, read as a mapping."""

    strict: ClassVar[bool] = False
    free: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.free)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> OtherFigures:
        return cls(dict(value or {}))


StageFigures = IntegrityFigures | PoisoningFigures | AnonymizeFigures | HandoffFigures | OtherFigures
FIGURES: dict[str, type[_Record]] = {
    "integrity": IntegrityFigures, "poisoning": PoisoningFigures, "anonymize": AnonymizeFigures,
    "handoff": HandoffFigures,
}


@dataclass(frozen=True)
class StageResult:
    """The XCom value of every stage operator: JSON-serialisable, non-secret.

    ``counts`` and ``figures`` may be given as mappings; they are converted to the typed records
    (``figures`` by the stage's name; an unknown stage keeps free keys in :class:`OtherFigures`).
    """

    stage: str
    manifest_path: str
    manifest_digest: str
    counts: StageCounts
    data_root: str  # where the accepted files of this stage live (input root for integrity)
    figures: Any = None  # StageFigures

    def __post_init__(self) -> None:
        if not isinstance(self.counts, StageCounts):
            object.__setattr__(self, "counts", StageCounts.from_dict(self.counts))
        kind = FIGURES.get(self.stage, OtherFigures)
        if not isinstance(self.figures, kind):
            object.__setattr__(self, "figures", kind.from_dict(self.figures))

    @property
    def extra(self) -> Mapping[str, Any]:
        """The figures as a read-only mapping (the wire name)."""
        return self.figures

    def to_xcom(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "manifest_path": self.manifest_path,
            "manifest_digest": self.manifest_digest,
            "counts": self.counts.to_dict(),
            "data_root": self.data_root,
            "extra": self.figures.to_dict(),
        }

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any] | StageResult) -> StageResult:
        if isinstance(value, StageResult):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"a stage result must be a StageResult XCom (dict), got {type(value).__name__}")
        return cls(
            stage=value["stage"],
            manifest_path=value["manifest_path"],
            manifest_digest=value["manifest_digest"],
            counts=value.get("counts") or {},
            data_root=value["data_root"],
            figures=value.get("extra") or {},
        )


# --- the stage skeleton ------------------------------------------------------------------------


class StageFailed(RuntimeError):
    """A check whose policy is ``fail`` fired. Everything (manifest, quarantine, reports) was written
    first, for inspection; ``result`` is what the stage would have returned. A retry cannot help."""

    def __init__(self, message: str, result: StageResult) -> None:
        super().__init__(message)
        self.result = result


def open_upstream(upstream: StageResult | Mapping[str, Any]) -> tuple[StageResult, Manifest]:
    """The upstream stage's result and manifest, read and checked against the announced digest."""
    from secure_data.dataset.manifest import read_manifest

    up = StageResult.from_xcom(upstream)
    return up, read_manifest(up.manifest_path, expected_digest=up.manifest_digest)


def finish_stage(
    stage: str,
    manifest_path: str | Path,
    header: Mapping[str, Any],
    records: Iterable[FileRecord],
    *,
    data_root: str | Path,
    figures: Any,
    upstream: Manifest | None = None,
    counts: Mapping[str, int] | None = None,
) -> StageResult:
    """Write the stage manifest (last: a manifest on disk means the stage finished) and build the result.

    With ``upstream``, a stage that keeps every record (poisoning, anonymize) is checked to have lost
    or invented none: accepted + quarantined = input. ``counts`` adds stage-specific counts.
    """
    from secure_data.dataset.manifest import count_records, write_manifest

    records = list(records)
    digest = write_manifest(manifest_path, header, records)
    base = count_records(records)
    if upstream is not None and (len(records) != len(upstream.records)
                                 or base["files"] != upstream.counts()["files"]):
        raise AssertionError(f"{stage} stage lost or invented records")  # never: accepted + quarantined = input
    return StageResult(stage=stage, manifest_path=str(manifest_path), manifest_digest=digest,
                       counts={**base, **(counts or {})}, data_root=str(data_root), figures=figures)
