"""The poisoning stage: integrity manifest in, findings + stage manifest (+ quarantine) out.

Flow: read the upstream manifest (digest checked) -> pair images with labels ->
one verified read and one decode per image (``imagepass``: class templates from a
seeded sample of boxes, per-sample features, verification thumbnails, the pinned
model's detections and box features; in parallel if ``workers > 1``) -> checks -> policies ->
quarantine copies -> ``findings.jsonl`` -> stage manifest (written last, so a
manifest on disk means the stage finished). Re-running on the same input gives
byte-identical outputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from secure_data.dataset.atomic import atomic_write_text
from secure_data.dataset.layout import UnsafePathError
from secure_data.dataset.manifest import (
    FileRecord,
    IntegrityError,
    Manifest,
    Reason,
    canonical_json,
    read_manifest,
    verified_read,
)
from secure_data.dataset.quarantine import quarantine_file
from secure_data.dataset.stage import (
    PoisoningFigures,
    RunLayout,
    StageFailed,
    StageResult,
    finish_stage,
    open_upstream,
)
from secure_data.poisoning.blended import check_blended_patches, scene_documents
from secure_data.poisoning.boxchecks import check_box_fits, check_box_outliers
from secure_data.poisoning.config import FAIL, QUARANTINE, PoisoningConfig
from secure_data.poisoning.duplicates import (
    check_duplicates,
    duplicate_groups,
    find_duplicate_edges,
    verify_edges,
    with_box_agreement,
)
from secure_data.poisoning.features import SampleFeatures
from secure_data.poisoning.findings import Finding, make_finding, plain, write_findings
from secure_data.poisoning.imagepass import PassResult, image_pass
from secure_data.poisoning.patches import check_repeated_patches
from secure_data.poisoning.samples import Sample, collect_samples
from secure_data.poisoning.search import check_trigger_search
from secure_data.poisoning.triggers import check_triggers

STAGE = "poisoning"
MANIFEST_NAME = "manifest.jsonl"
FINDINGS_NAME = "findings.jsonl"
DRIFT_NAME = "drift.json"
CONTENT_CHECKS = ("box_outlier", "box_misaligned", "class_confusion")

log = logging.getLogger(__name__)


class PoisoningCheckFailed(StageFailed):
    """A check whose policy is ``fail`` fired. Outputs were written first, for inspection."""

    def __init__(self, message: str, result: StageResult, failed_checks: Sequence[str]) -> None:
        super().__init__(message, result)
        self.failed_checks = tuple(failed_checks)


@dataclass(frozen=True)
class Analysis:
    """Everything the checks produced, before policies touch the manifest (tests and the benchmark use it)."""

    samples: tuple[Sample, ...]
    features: tuple[SampleFeatures, ...]
    findings: tuple[Finding, ...]
    drift_results: tuple[dict, ...] = ()


# ---------------------------------------------------------------- reading

def _class_names(root: str, records: Iterable[FileRecord]) -> dict[int, str]:
    """The class names integrity stored in the manifest (``class_names`` of the data.yaml record, parsed
    by ``dataset.layout.parse_class_names``, the one data.yaml parser); for a manifest written without
    them, that same parser over the verified bytes. None if data.yaml is missing or invalid (integrity
    has already quarantined or failed such a file)."""
    from secure_data.dataset.layout import parse_class_names

    records = list(records)
    for rec in records:
        if rec.kind == "meta" and rec.accepted and isinstance(rec.meta.get("class_names"), list):
            return {i: str(n) for i, n in enumerate(rec.meta["class_names"])}
    for rec in records:
        if rec.path == "data.yaml" and rec.accepted:
            try:
                return dict(enumerate(parse_class_names(verified_read(root, rec))))
            except (IntegrityError, OSError, UnsafePathError, ValueError):
                return {}
    return {}


def _template_sample(samples: Sequence[Sample], config: PoisoningConfig) -> list[int]:
    """A seeded sample of images (indices) giving up to ``template_sample`` boxes per class."""
    import numpy as np

    order = np.random.default_rng(config.seed).permutation(len(samples))
    per_sample = [_capped_class_counts(s, config.stats_boxes_per_image) for s in samples]
    need: dict[int, int] = {}
    for counts in per_sample:
        for cls, n in counts.items():
            need[cls] = need.get(cls, 0) + n
    need = {c: min(n, config.template_sample) for c, n in need.items()}
    chosen = []
    for i in order.tolist():
        if any(need.get(cls, 0) > 0 for cls in per_sample[i]):
            chosen.append(i)
            for cls, n in per_sample[i].items():
                need[cls] -= n
        if all(v <= 0 for v in need.values()):
            break
    return chosen


def _capped_class_counts(sample: Sample, cap: int) -> dict[int, int]:
    """Boxes per class this sample gives the templates: at most ``cap`` (one label file with thousands
    of boxes would otherwise be the whole template sample, and the median its picture)."""
    counts: dict[int, int] = {}
    for box in sample.boxes:
        counts[box[0]] = min(counts.get(box[0], 0) + 1, cap)
    return counts


# ---------------------------------------------------------------- analysis

def analyse(
    root: str,
    samples: Sequence[Sample],
    config: PoisoningConfig,
    *,
    class_names: Mapping[int, str] | None = None,
    reference: Sequence[Sample] | None = None,
) -> Analysis:
    """Run every check over ``samples`` (no policy, no output files)."""
    names = dict(class_names or {})
    # One verified read and one decode per image for every check below (poisoning/imagepass.py).
    pixels = image_pass(root, samples, config, _template_sample(samples, config), names=names)
    try:
        return _analyse_features(samples, pixels, config, names, reference)
    finally:
        pixels.close()


def _analyse_features(
    samples: Sequence[Sample], pixels: PassResult, config: PoisoningConfig, names: dict[int, str],
    reference: Sequence[Sample] | None,
) -> Analysis:
    feats = pixels.features
    findings: list[Finding] = []
    for s, f in zip(samples, feats, strict=True):
        if not f.ok:
            findings.append(make_finding(
                "unreadable", suspects=[s.key], evidence={"path": s.image.path, "error": f.error},
                message=f"{s.image.path}: {f.error}",
            ))
    ok = [i for i, f in enumerate(feats) if f.ok]
    s_ok = [samples[i] for i in ok]
    f_ok = [feats[i] for i in ok]

    content = check_box_outliers(s_ok, config) + check_box_fits(s_ok, f_ok, config, names)
    if config.backbone_enabled:
        # Labels against the pinned domain model's detections. Unlike feature_outlier, these feed the
        # content flags (blame in duplicate conflicts) and the trigger seeds: a label an object
        # detector contradicts is a label anomaly like any other.
        from secure_data.poisoning.presence import check_presence

        content += check_presence(s_ok, pixels.seen, config, names, feats=f_ok)
    findings += content
    content_flags: dict[str, int] = {}
    for fnd in content:
        for key in fnd.suspects:
            content_flags[key] = content_flags.get(key, 0) + 1

    edges = verify_edges(find_duplicate_edges(s_ok, f_ok, config), lambda i: pixels.load_gray(ok[i]), config)
    edges = with_box_agreement(edges, s_ok, lambda i: pixels.load_gray(ok[i]), config)
    groups = duplicate_groups(len(s_ok), edges)
    dups = check_duplicates(s_ok, f_ok, edges, groups, content_flags, config)
    findings += dups

    seeds = set(content_flags)
    seeds |= {k for fnd in dups if fnd.check == "duplicate_label_conflict" for k in fnd.suspects}
    seeds |= {s.key for s in s_ok if not s.boxes}
    patches = check_triggers(s_ok, f_ok, groups, seeds, config, names)
    patches += check_repeated_patches(s_ok, f_ok, groups, config, names, seeds)
    # views of one scene are one document for the blended check (its links would join them like a pasted picture)
    scenes = scene_documents(f_ok, groups, config, lambda i: pixels.load_gray(ok[i]))
    leads: set[str] = set()  # blended chains too thin to report: where the trigger search looks too
    patches += check_blended_patches(s_ok, f_ok, scenes, config, names, seeds, maps=pixels.search_maps(ok),
                                     leads=leads)
    findings += patches
    spectral: list[Finding] = []
    if config.backbone_enabled:
        # Optional: a pinned detection model's features; it does not feed the trigger seeds, so the
        # checks above report the same with it on or off.
        from secure_data.poisoning.spectral import check_feature_outliers

        spectral = check_feature_outliers(pixels.box_features, config, names)
        findings += spectral
    # Everything named so far (plain same-label duplicates aside) seeds the trigger search.
    flagged = set(content_flags) | {k for fnd in (*dups, *patches, *spectral) if fnd.check != "duplicate"
                                    for k in fnd.suspects}
    findings += check_trigger_search(s_ok, f_ok, groups, flagged | leads, pixels.search_maps(ok), config, names,
                                     leads=leads - flagged, load_gray=lambda i: pixels.load_gray(ok[i]))

    drift_results: list[dict] = []
    if reference is not None:
        from secure_data.poisoning.drift import check_drift

        drift_findings, drift_results = check_drift(s_ok, reference, config, names)
        findings += drift_findings
    return Analysis(samples=tuple(samples), features=tuple(feats), findings=tuple(findings),
                    drift_results=tuple(drift_results))


# ---------------------------------------------------------------- the stage

def _load_reference(reference: str | os.PathLike | Manifest | None, digest: str | None) -> list[Sample] | None:
    if reference is None:
        return None
    manifest = reference if isinstance(reference, Manifest) else read_manifest(reference, expected_digest=digest)
    return collect_samples(manifest.records)


def run_poisoning(
    upstream: StageResult,
    layout: RunLayout,
    *,
    config: PoisoningConfig | None = None,
    reference_manifest: str | os.PathLike | Manifest | None = None,
    reference_digest: str | None = None,
) -> StageResult:
    """Screen the upstream stage's accepted samples for poisoning; write findings, quarantine, manifest.

    Raises :class:`PoisoningCheckFailed` (after writing everything) when a check
    with policy ``fail`` fired, and ManifestError when the upstream manifest does not
    match its digest.
    """
    config = config or PoisoningConfig()
    upstream, manifest = open_upstream(upstream)
    root = upstream.data_root
    samples = collect_samples(manifest.records)
    names = _class_names(root, manifest.records)
    reference = _load_reference(reference_manifest, reference_digest)
    log.info("poisoning: %d samples from %s", len(samples), upstream.manifest_path)

    analysis = analyse(root, samples, config, class_names=names, reference=reference)
    findings = [_with_action(f, config.action(f.check)) for f in analysis.findings]

    # Policies -> reasons per sample (a sample blamed by several findings keeps every reason).
    reasons: dict[str, list[Reason]] = {}
    for f in findings:
        if f.action == QUARANTINE:
            for key in f.suspects:
                reasons.setdefault(key, []).append(
                    Reason(code=f"poisoning.{f.check}", detail=f"{f.message} [finding {f.finding_id}]", stage=STAGE)
                )
    out_dir = layout.stage(STAGE)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = _apply_quarantine(root, manifest.records, reasons, layout.quarantine(STAGE))
    written = write_findings(out_dir / FINDINGS_NAME, findings)
    drift_path = None
    if reference is not None:
        # Every expectation's result (passes too): the evidence that drift was checked, and against what.
        drift_path = out_dir / DRIFT_NAME
        atomic_write_text(drift_path, canonical_json({
            "reference": str(reference_manifest if not isinstance(reference_manifest, Manifest) else "<manifest>"),
            "results": plain(list(analysis.drift_results)),
        }) + "\n")
    header = {
        "stage": STAGE,
        "upstream": {"stage": upstream.stage, "manifest_digest": upstream.manifest_digest},
        "findings": {"path": FINDINGS_NAME, "digest": written.digest, "by_check": dict(written.by_check)},
        "config": config.to_dict(),
    }
    failed = sorted({f.check for f in findings if f.action == FAIL})
    figures = PoisoningFigures(
        findings_path=str(out_dir / FINDINGS_NAME), findings_digest=written.digest,
        findings_by_check=dict(written.by_check), quarantined_samples=len(reasons), failed_checks=failed,
        drift_path=str(drift_path) if drift_path else None)
    result = finish_stage(STAGE, out_dir / MANIFEST_NAME, header, records, data_root=root, figures=figures,
                          upstream=manifest)
    log.info("poisoning: %d findings %s, %d samples quarantined", len(findings), dict(written.by_check), len(reasons))
    if failed:
        raise PoisoningCheckFailed(
            f"poisoning checks with policy 'fail' fired: {failed}; see {written.path}", result, failed
        )
    return result


def _with_action(f: Finding, action: str) -> Finding:
    return Finding(check=f.check, suspects=f.suspects, involved=f.involved, evidence=f.evidence,
                   message=f.message, action=action)


def _apply_quarantine(
    root: str, records: Sequence[FileRecord], reasons: Mapping[str, list[Reason]], quarantine_root: Path
) -> list[FileRecord]:
    """Every record kept; those of blamed samples (image and label) become quarantined with a copy."""
    out = []
    for rec in records:
        why = reasons.get(rec.sample) if rec.sample is not None and rec.accepted else None
        if not why:
            out.append(rec)
            continue
        try:
            data: bytes | None = verified_read(root, rec)
        except (IntegrityError, OSError, UnsafePathError):
            data = None  # bytes we cannot vouch for are not copied; the reason file says so
        quarantine_file(quarantine_root, rec, data, why)
        out.append(rec.quarantined(*why))
    return out
