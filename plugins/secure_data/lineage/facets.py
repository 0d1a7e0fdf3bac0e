"""Datasets and facets of the secure-data operators, for the OpenLineage provider (imported only by it).

Datasets: the raw source (its URI, credentials stripped), each stage's folder in the run directory
(``<run>/<stage>``, named by the stage manifest's folder so one stage's output is the next one's input),
the published package and the run report. Facets:

* standard: ``dataQualityAssertions`` (integrity checks and Great Expectations results, poisoning
  checks, residual detections), ``dataQualityMetrics`` (files read), ``outputStatistics`` (files kept);
* custom (``secureData_*``, JSON schemas in ``schemas/``): counts (input / accepted / quarantined and
  the quarantine reasons by code), poisoning findings per check, anonymization figures (boxes,
  residuals, detectors, verifiers, model SHA-256 pins), the package (digests, key names and versions,
  the provenance statement's URI and digest), the Vault preflight (key types and versions) and the
  deployment policy's digests.

Only what the XCom values and the manifests' headers already hold: URIs, digests, counts, codes, names
and versions; never a secret, a token, a data key or a dataset credential.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import attr
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import RunFacet
from openlineage.client.generated.data_quality_assertions_dataset import (
    Assertion,
    DataQualityAssertionsDatasetFacet,
)
from openlineage.client.generated.data_quality_metrics_input_dataset import (
    DataQualityMetricsInputDatasetFacet,
)
from openlineage.client.generated.output_statistics_output_dataset import OutputStatisticsOutputDatasetFacet

PRODUCER = "https://secure-data.dev/airflow-plugin"
SCHEMA_BASE = "https://secure-data.dev/spec/facets/1-0-0/"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def _schema(name: str) -> str:
    return f"{SCHEMA_BASE}{name}.json#/$defs/{name}"


@attr.define
class SecureDataCountsRunFacet(RunFacet):
    """accepted + quarantined = input, for one stage, and why files were quarantined."""

    stage: str
    input: int
    accepted: int
    quarantined: int
    quarantineReasons: dict[str, int] = attr.field(factory=dict)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return _schema("SecureDataCountsRunFacet")


@attr.define
class SecureDataPoisoningRunFacet(RunFacet):
    """Poisoning findings per check."""

    findingsByCheck: dict[str, int]  # noqa: N815
    quarantinedSamples: int  # noqa: N815
    failedChecks: list[str] = attr.field(factory=list)  # noqa: N815
    findingsDigest: str | None = attr.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return _schema("SecureDataPoisoningRunFacet")


@attr.define
class SecureDataAnonymizationRunFacet(RunFacet):
    """Anonymization figures of a shard or of the merged stage."""

    images: int
    anonymized: int
    quarantined: int
    boxes: int
    residualFirstPass: int  # noqa: N815
    residualDetections: int  # noqa: N815
    models: dict[str, str]  # model name -> pinned SHA-256 (detectors and verifiers)
    verifiers: list[str] = attr.field(factory=list)
    boxesPerClass: dict[str, int] = attr.field(factory=dict)  # noqa: N815
    auditDigest: str | None = attr.field(default=None)  # noqa: N815
    shard: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return _schema("SecureDataAnonymizationRunFacet")


@attr.define
class SecureDataPackageRunFacet(RunFacet):
    """The published package: ids, digests, key names and versions, the provenance statement."""

    packageId: str  # noqa: N815
    manifestDigest: str  # noqa: N815
    contentDigest: str  # noqa: N815
    files: int
    dataKey: dict[str, Any]  # noqa: N815
    signatures: dict[str, Any] = attr.field(factory=dict)
    provenanceUri: str | None = attr.field(default=None)  # noqa: N815
    provenanceDigest: str | None = attr.field(default=None)  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return _schema("SecureDataPackageRunFacet")


@attr.define
class SecureDataPreflightRunFacet(RunFacet):
    """What the Vault preflight proved: the role, the Transit keys (type, version), sign/decrypt rights."""

    role: str
    transitKeys: dict[str, Any]  # noqa: N815
    canSign: bool  # noqa: N815
    canDecrypt: bool  # noqa: N815
    secretPaths: int  # noqa: N815

    @staticmethod
    def _get_schema() -> str:
        return _schema("SecureDataPreflightRunFacet")


@attr.define
class SecureDataPolicyRunFacet(RunFacet):
    """The deployment policy the run was checked against, and the effective (possibly tightened) policy."""

    policyDigest: str  # noqa: N815
    effectiveDigest: str  # noqa: N815
    source: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return _schema("SecureDataPolicyRunFacet")


CUSTOM_FACETS = {
    "secureData_policy": SecureDataPolicyRunFacet,
    "secureData_counts": SecureDataCountsRunFacet,
    "secureData_poisoning": SecureDataPoisoningRunFacet,
    "secureData_anonymization": SecureDataAnonymizationRunFacet,
    "secureData_package": SecureDataPackageRunFacet,
    "secureData_preflight": SecureDataPreflightRunFacet,
}


# --- datasets ------------------------------------------------------------------------------------------


def dataset_name(location: str | os.PathLike) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a path or URI, per the naming spec; user info and query dropped."""
    text = os.fspath(location)
    if "://" not in text:
        return "file", os.path.abspath(text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    host = parts.netloc.rsplit("@", 1)[-1]  # never a user:password@ into lineage
    path = unquote(parts.path)
    if scheme in ("file", "local"):
        return "file", path
    if scheme == "s3a":
        scheme = "s3"
    return f"{scheme}://{host}", path.lstrip("/") or "/"


def _dataset(cls: type, location: Any, facets: Mapping[str, Any] | None = None, **kw: Any) -> Any:
    namespace, name = dataset_name(str(location))
    return cls(namespace=namespace, name=name, facets=dict(facets or {}), **kw)


def _stage_dir(stage: Mapping[str, Any] | None) -> str | None:
    path = (stage or {}).get("manifest_path")
    if not path:
        return None
    return str(path).rsplit("/", 1)[0]


def _as_mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def _manifest_summary(path: str | None) -> tuple[dict[str, Any], Counter]:
    """Header and quarantine reasons (by code) of a local stage manifest; empty if unreadable."""
    if not path or "://" in str(path):
        return {}, Counter()
    header: dict[str, Any] = {}
    reasons: Counter = Counter()
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh):
                if not line.strip():
                    continue
                row = json.loads(line)
                if number == 0:
                    header = row
                elif row.get("status") == "quarantined":
                    reasons.update(r.get("code", "unknown") for r in row.get("reasons") or ())
    except (OSError, ValueError):
        return {}, Counter()
    return header, reasons


def _counts_facet(stage: str, value: Mapping[str, Any], reasons: Counter) -> SecureDataCountsRunFacet:
    counts = value.get("counts") or {}
    return SecureDataCountsRunFacet(
        stage=stage, input=int(counts.get("files", 0)), accepted=int(counts.get("accepted", 0)),
        quarantined=int(counts.get("quarantined", 0)), quarantineReasons=dict(sorted(reasons.items())),
        producer=PRODUCER)


def _assertions(items: list[Assertion]) -> DataQualityAssertionsDatasetFacet:
    return DataQualityAssertionsDatasetFacet(assertions=items, producer=PRODUCER)


def _balance(counts: Mapping[str, Any]) -> Assertion:
    files, ok, bad = (int(counts.get(k, 0)) for k in ("files", "accepted", "quarantined"))
    return Assertion(assertion="accepted_plus_quarantined_equals_input", success=ok + bad == files,
                     expected=str(files), actual=str(ok + bad))


def _output_stats(counts: Mapping[str, Any]) -> OutputStatisticsOutputDatasetFacet:
    accepted = int(counts.get("accepted", 0))
    return OutputStatisticsOutputDatasetFacet(rowCount=accepted, fileCount=accepted, producer=PRODUCER)


# --- per operator ----------------------------------------------------------------------------------------


def _integrity(op: Any, value: dict[str, Any], lineage: Any) -> None:
    counts = value.get("counts") or {}
    header, reasons = _manifest_summary(value.get("manifest_path"))
    input_facets: dict[str, Any] = {}
    if value:
        checks = [Assertion(assertion=str(e.get("expectation")), success=bool(e.get("success")),
                            column=e.get("column"), name=str(e.get("code")), severity="great_expectations",
                            actual=None if e.get("unexpected_count") is None else str(e["unexpected_count"]))
                  for e in (header.get("gx") or {}).get("expectations") or ()]
        checks += [Assertion(assertion=code, success=False, actual=str(n), severity="quarantine")
                   for code, n in sorted(reasons.items())]
        checks.append(_balance(counts))
        input_facets = {"dataQualityAssertions": _assertions(checks),
                        "dataQualityMetrics": DataQualityMetricsInputDatasetFacet(
                            rowCount=int(counts.get("files", 0)), columnMetrics={}, producer=PRODUCER)}
    if getattr(op, "source", None):
        lineage.inputs.append(_dataset(InputDataset, op.source, inputFacets=input_facets))
    if value.get("manifest_path"):
        lineage.outputs.append(_dataset(OutputDataset, _stage_dir(value),
                                        outputFacets={"outputStatistics": _output_stats(counts)}))
        lineage.run_facets["secureData_counts"] = _counts_facet("integrity", value, reasons)


def _integrity_shard(op: Any, value: dict[str, Any], lineage: Any) -> None:
    if getattr(op, "source", None):
        lineage.inputs.append(_dataset(InputDataset, op.source))


def _poisoning(op: Any, value: dict[str, Any], lineage: Any) -> None:
    upstream = _as_mapping(getattr(op, "upstream", None))
    extra = value.get("extra") or {}
    by_check = {str(k): int(v) for k, v in (extra.get("findings_by_check") or {}).items()}
    input_facets = {}
    if value:
        failed = set(extra.get("failed_checks") or ())
        checks = [Assertion(assertion=check, success=check not in failed, actual=str(n), severity="poisoning")
                  for check, n in sorted(by_check.items())]
        input_facets = {"dataQualityAssertions": _assertions(checks + [_balance(value.get("counts") or {})])}
    if _stage_dir(upstream):
        lineage.inputs.append(_dataset(InputDataset, _stage_dir(upstream), inputFacets=input_facets))
    if value.get("manifest_path"):
        _, reasons = _manifest_summary(value.get("manifest_path"))
        lineage.outputs.append(_dataset(OutputDataset, _stage_dir(value),
                                        outputFacets={"outputStatistics": _output_stats(value.get("counts") or {})}))
        lineage.run_facets["secureData_counts"] = _counts_facet("poisoning", value, reasons)
        lineage.run_facets["secureData_poisoning"] = SecureDataPoisoningRunFacet(
            findingsByCheck=by_check, quarantinedSamples=int(extra.get("quarantined_samples", 0)),
            failedChecks=sorted(extra.get("failed_checks") or ()), findingsDigest=extra.get("findings_digest"),
            producer=PRODUCER)


def _verifier_names(op: Any, figures: Mapping[str, Any]) -> list[str]:
    """The verifiers' names: from the stage result when it lists them, else from the operator's config."""
    listed = figures.get("verifiers")
    if isinstance(listed, list):
        return [str(v.get("name")) if isinstance(v, Mapping) else str(v) for v in listed]
    try:
        return [spec.name for spec in op._config().verifiers]
    except Exception:  # the facet must never fail the listener; names are a nice-to-have
        return []


def _model_pins(figures: Mapping[str, Any], models: Mapping[str, Any]) -> dict[str, str]:
    pins = {str(k): str(v) for k, v in models.items()}
    for entry in [*(figures.get("detectors") or ()), *(figures.get("verifiers") or ())]:
        if isinstance(entry, Mapping) and entry.get("name") and entry.get("sha256"):
            pins[str(entry["name"])] = str(entry["sha256"])
    return pins


def _anonymization_facet(figures: Mapping[str, Any], models: Mapping[str, Any], verifiers: list[str],
                         audit_digest: str | None, shard: str | None) -> SecureDataAnonymizationRunFacet:
    return SecureDataAnonymizationRunFacet(
        images=int(figures.get("images", 0)), anonymized=int(figures.get("anonymized", 0)),
        quarantined=int(figures.get("quarantined", 0)), boxes=int(figures.get("boxes", 0)),
        residualFirstPass=int(figures.get("residual_first_pass", 0)),
        residualDetections=int(figures.get("residual_detections", 0)),
        models=_model_pins(figures, models), verifiers=verifiers,
        boxesPerClass={str(k): int(v) for k, v in (figures.get("boxes_per_class") or {}).items()},
        auditDigest=audit_digest, shard=shard, producer=PRODUCER)


def _residual_assertions(figures: Mapping[str, Any]) -> DataQualityAssertionsDatasetFacet:
    first, last = int(figures.get("residual_first_pass", 0)), int(figures.get("residual_detections", 0))
    return _assertions([
        Assertion(assertion="no_protected_class_after_first_pass", success=first == 0, actual=str(first),
                  severity="reobfuscate"),
        Assertion(assertion="no_protected_class_after_last_pass", success=last == 0, actual=str(last),
                  severity="quarantine"),
    ])


def _anonymize_shard(op: Any, value: dict[str, Any], lineage: Any) -> None:
    upstream = _as_mapping(getattr(op, "upstream", None))
    figures = value.get("counts") or {}
    checks = {"dataQualityAssertions": _residual_assertions(figures)} if value else {}
    if _stage_dir(upstream):
        lineage.inputs.append(_dataset(InputDataset, _stage_dir(upstream), inputFacets=checks))
    if value.get("audit_path"):
        lineage.outputs.append(_dataset(OutputDataset, str(value["audit_path"]).rsplit("/", 1)[0]))
        lineage.run_facets["secureData_anonymization"] = _anonymization_facet(
            figures, value.get("models") or {}, _verifier_names(op, value), value.get("audit_digest"),
            f"{value.get('shard_index')}/{value.get('shard_count')}")


def _anonymize(op: Any, value: dict[str, Any], lineage: Any) -> None:
    upstream = _as_mapping(getattr(op, "upstream", None))
    extra = value.get("extra") or {}
    checks = {"dataQualityAssertions": _residual_assertions(extra)} if value else {}
    if _stage_dir(upstream):
        lineage.inputs.append(_dataset(InputDataset, _stage_dir(upstream), inputFacets=checks))
    if value.get("manifest_path"):
        header, reasons = _manifest_summary(value.get("manifest_path"))
        lineage.outputs.append(_dataset(OutputDataset, _stage_dir(value),
                                        outputFacets={"outputStatistics": _output_stats(value.get("counts") or {})}))
        lineage.run_facets["secureData_counts"] = _counts_facet("anonymize", value, reasons)
        lineage.run_facets["secureData_anonymization"] = _anonymization_facet(
            extra, header.get("models") or {}, _verifier_names(op, extra), extra.get("audit_digest"), None)


def _handoff(op: Any, value: dict[str, Any], lineage: Any) -> None:
    upstream = _as_mapping(getattr(op, "upstream", None))
    if _stage_dir(upstream):
        lineage.inputs.append(_dataset(InputDataset, _stage_dir(upstream)))
    extra = value.get("extra") or {}
    if extra.get("package_uri"):
        counts = extra.get("counts") or {}
        lineage.outputs.append(_dataset(OutputDataset, extra["package_uri"], outputFacets={
            "outputStatistics": OutputStatisticsOutputDatasetFacet(
                rowCount=int(counts.get("files", 0)), fileCount=int(counts.get("files", 0)),
                size=int(counts.get("ciphertext_bytes", 0)), producer=PRODUCER)}))
        lineage.run_facets["secureData_package"] = SecureDataPackageRunFacet(
            packageId=str(extra.get("package_id")), manifestDigest=str(extra.get("manifest_digest")),
            contentDigest=str(extra.get("content_digest")), files=int(counts.get("files", 0)),
            dataKey={"name": extra.get("key_name"), "version": extra.get("key_version")},
            signatures=dict(extra.get("signatures") or {}), provenanceUri=extra.get("provenance_uri"),
            provenanceDigest=extra.get("provenance_digest"), producer=PRODUCER)


def _consume(op: Any, value: dict[str, Any], lineage: Any) -> None:
    uri = value.get("package_uri") or getattr(op, "package_uri", None)
    if uri and str(uri) != "None":
        lineage.inputs.append(_dataset(InputDataset, uri))


def _report(op: Any, value: dict[str, Any], lineage: Any) -> None:
    if value.get("report_path"):
        lineage.outputs.append(_dataset(OutputDataset, str(value["report_path"]).rsplit("/", 1)[0]))


def _preflight(op: Any, value: dict[str, Any], lineage: Any) -> None:
    if value:
        keys = {str(name): {"type": str(k.get("type")), "version": int(k.get("latest_version") or 0)}
                for name, k in (value.get("transit_keys") or {}).items()}
        lineage.run_facets["secureData_preflight"] = SecureDataPreflightRunFacet(
            role=str(value.get("role")), transitKeys=keys, canSign=bool(value.get("can_sign")),
            canDecrypt=bool(value.get("can_decrypt")), secretPaths=len(value.get("secret_paths") or {}),
            producer=PRODUCER)


def _policy(op: Any, value: dict[str, Any], lineage: Any) -> None:
    if value.get("policy_digest"):
        lineage.run_facets["secureData_policy"] = SecureDataPolicyRunFacet(
            policyDigest=str(value["policy_digest"]), effectiveDigest=str(value.get("effective_digest")),
            source=None if value.get("policy_source") is None else str(value["policy_source"]), producer=PRODUCER)


_BUILDERS: dict[str, Callable[[Any, dict[str, Any], Any], None]] = {
    "PolicyCheckOperator": _policy,
    "VaultPreflightOperator": _preflight,
    "IntegrityShardOperator": _integrity_shard,
    "IntegrityOperator": _integrity,
    "PoisoningOperator": _poisoning,
    "AnonymizeOperator": _anonymize_shard,
    "AnonymizeMergeOperator": _anonymize,
    "PackageOperator": _handoff,
    "PackageConsumerOperator": _consume,
    "SanitizationReportOperator": _report,
}


def operator_lineage(op: Any, value: Any, *, failed: bool) -> Any:
    """The ``OperatorLineage`` of one secure-data task (after success, or with what is known after a failure)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    lineage = OperatorLineage()
    builder = next((_BUILDERS[c.__name__] for c in type(op).__mro__ if c.__name__ in _BUILDERS), None)
    if builder is not None:
        builder(op, {} if failed else _as_mapping(value), lineage)
    return lineage
