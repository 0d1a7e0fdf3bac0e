"""The integrity stage: raw YOLO dataset in, trusted manifest (+ quarantine, tamper diff, GX Data Docs) out.

No Airflow here: ``run_integrity`` is plain Python that a test, a notebook or the
operator calls. Steps:

1. source: a local directory is used in place; object storage is mirrored into
   ``<run>/source/`` first (hashing as it copies, see ``dataset.storage``);
2. ``data.yaml`` is read once, hashed and parsed (class names);
3. every other file is read once in a thread pool (hashing and decoding release
   the GIL), hashed and checked; only a few files' bytes are in memory at a time;
4. image/label pairing, then the tamper diff against a reference manifest;
5. the Great Expectations suite over the metadata tables of what is still in the running;
6. policies turn findings into warn / quarantine / fail; a sample (image + label)
   is quarantined as a unit; quarantined files are copied with their reasons;
7. the canonical manifest is written last (it is the commit point of the stage).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_data.dataset.atomic import atomic_write_bytes
from secure_data.dataset.layout import DATA_YAML, parse_class_names
from secure_data.dataset.manifest import (
    FileRecord,
    IntegrityError,
    Manifest,
    Reason,
    digest_of,
    read_manifest,
    verified_read,
)
from secure_data.dataset.quarantine import quarantine_file
from secure_data.dataset.stage import IntegrityFigures, RunLayout, StageFailed, StageResult, finish_stage
from secure_data.dataset.storage import Mirror, is_remote, mirror_source, source_label
from secure_data.integrity import codes
from secure_data.integrity.codes import ACCEPT, FAIL, QUARANTINE, STAGE, FileFinding
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.files import REGULAR, FileResult, InputEntry, check_entry, list_entries, read_once
from secure_data.integrity.gx_tables import gx_tables
from secure_data.integrity.images import configure_pillow
from secure_data.integrity.policy import (
    action_for,
    add_sample_findings,
    verdict_of,
    worst_action,
)
from secure_data.integrity.tamper import ADDED, MODIFIED, REMOVED, diff_records, encode_diff

log = logging.getLogger(__name__)

HEADER_FORMAT = "secure-data/integrity-header/v1"
MANIFEST_NAME = "manifest.jsonl"
TAMPER_DIFF_NAME = "tamper_diff.jsonl"
MAX_DATA_YAML_BYTES = 1024 * 1024
BATCH = 32  # files per pool task


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class DatasetError(ValueError):
    """The input cannot be checked at all (no data.yaml, bad class names, not a directory...)."""


class IntegrityFailed(StageFailed):
    """A check whose policy is "fail" fired. The manifest, quarantine and reports are written first."""


# --------------------------------------------------------------------------- helpers


def _read_class_names(data_root: Path, entries: list[InputEntry]) -> tuple[FileRecord, list[str]]:
    entry = next((e for e in entries if e.path == DATA_YAML), None)
    if entry is None:
        raise DatasetError(f"{DATA_YAML} is missing from the dataset root")
    if entry.state != REGULAR:
        raise DatasetError(f"{DATA_YAML} is not a regular file ({entry.state}); refusing to follow it")
    data, sha, size = read_once(data_root, DATA_YAML, MAX_DATA_YAML_BYTES)
    if data is None:
        raise DatasetError(f"{DATA_YAML} is larger than {MAX_DATA_YAML_BYTES} bytes")
    if entry.expected_sha256 is not None and sha != entry.expected_sha256:
        raise DatasetError(f"{DATA_YAML} differs from the copy hashed when the source was mirrored")
    try:
        names = parse_class_names(data)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    _check_named_splits(_named_splits(data), entries)
    record = FileRecord(path=DATA_YAML, sha256=sha, size=size, kind="meta", meta={"class_names": names})
    return record, names


_SPLIT_KEYS = ("train", "val", "test")


def _named_splits(data: bytes) -> dict[str, list[str]]:
    """``{split: [paths]}`` as data.yaml names them (the keys Ultralytics reads)."""
    import yaml

    doc = yaml.safe_load(data.decode("utf-8")) or {}
    out: dict[str, list[str]] = {}
    for key in _SPLIT_KEYS:
        value = doc.get(key) if isinstance(doc, dict) else None
        if value is not None:
            out[key] = [str(v) for v in (value if isinstance(value, list) else [value])]
    return out


def _check_named_splits(splits: Mapping[str, list[str]], entries: list[InputEntry]) -> None:
    """Before any file is checked: every split data.yaml names is a folder of the dataset holding images.

    A list file (``train: list.txt``) names images by path, absolute ones anywhere on the trainer host:
    refused. An empty or missing split would only be refused by the trainer, after all the work.
    """
    files = {e.path for e in entries}
    problems = []
    for split, paths in splits.items():
        for path in paths:
            folder = path.strip().removeprefix("./").rstrip("/")
            if folder in files or folder.lower().endswith(".txt"):
                problems.append(f"{split}: {path!r} is a list file; list-file splits are refused (name a folder "
                                "such as images/{split})".replace("{split}", split))
                continue
            prefix = f"{folder}/" if folder not in ("", ".") else ""
            if not any(e.path.startswith(prefix) and e.kind == "image" for e in entries):
                problems.append(f"{split}: {path!r} holds no images (empty or missing split)")
    if problems:
        raise DatasetError(f"{DATA_YAML} names splits the dataset cannot serve: " + "; ".join(problems))


def _pairing_findings(results: Mapping[str, FileResult]) -> dict[str, list[FileFinding]]:
    """Image <-> label pairing by sample key ("<split>/<stem>")."""
    by_sample: dict[str, list[FileRecord]] = defaultdict(list)
    for res in results.values():
        if res.record.sample is not None:
            by_sample[res.record.sample].append(res.record)
    out: dict[str, list[FileFinding]] = defaultdict(list)
    for sample, recs in by_sample.items():
        images = [r for r in recs if r.kind == "image"]
        labels = [r for r in recs if r.kind == "label"]
        if len(images) > 1:
            names = ", ".join(sorted(r.path for r in images))
            for r in recs:
                out[r.path].append(FileFinding(codes.AMBIGUOUS_SAMPLE, f"sample {sample} has several images: {names}"))
        elif images and not labels:
            out[images[0].path].append(FileFinding(codes.IMAGE_WITHOUT_LABEL, f"no labels file for sample {sample}"))
        elif labels and not images:
            out[labels[0].path].append(FileFinding(codes.LABEL_WITHOUT_IMAGE, f"no image for sample {sample}"))
    return out


def _tamper_findings(results: Mapping[str, FileResult], reference: Manifest,
                     stage_dir: Path) -> tuple[dict[str, list[FileFinding]], list[FileFinding], dict[str, Any]]:
    changes = diff_records((r.record for r in results.values()), reference)
    per_file: dict[str, list[FileFinding]] = defaultdict(list)
    dataset: list[FileFinding] = []
    partners: dict[str, list[str]] = defaultdict(list)
    for res in results.values():
        if res.record.sample is not None:
            partners[res.record.sample].append(res.record.path)
    for c in changes:
        if c.change == ADDED:
            per_file[c.path].append(FileFinding(codes.TAMPER_ADDED, "not in the reference manifest"))
        elif c.change == MODIFIED:
            per_file[c.path].append(FileFinding(codes.TAMPER_MODIFIED, f"sha256 was {c.reference_sha256}"))
        else:
            dataset.append(FileFinding(codes.TAMPER_REMOVED, f"{c.path} (sha256 {c.reference_sha256}) is gone"))
            for partner in partners.get(c.sample or "", []) if c.sample else []:
                per_file[partner].append(FileFinding(codes.TAMPER_REMOVED, f"{c.path} of the same sample was removed"))
    diff_bytes = encode_diff(reference.digest, changes)
    atomic_write_bytes(stage_dir / TAMPER_DIFF_NAME, diff_bytes)
    counts = Counter(c.change for c in changes)
    summary = {
        "reference_digest": reference.digest,
        "added": counts.get(ADDED, 0),
        "removed": counts.get(REMOVED, 0),
        "modified": counts.get(MODIFIED, 0),
        "diff_digest": digest_of(diff_bytes),
    }
    return per_file, dataset, summary


def _copy_to_quarantine(data_root: Path, qroot: Path, res: FileResult, record: FileRecord,
                        reasons: tuple[Reason, ...]) -> Reason | None:
    """Copy one rejected file (bytes re-read and checked against its hash). Returns an extra reason on failure.

    A name that cannot be a path inside the quarantine (unsafe, or too long there) is stored by
    ``quarantine_file`` under ``_unsafe_names/<sha256 of the path>``, its reason file saying so
    (``unsafe-name:...`` stand-ins for names that are not UTF-8 included: they are not the name on disk).
    """
    data = None
    extra = None
    if res.safe_name and res.readable and res.copyable:
        try:
            data = verified_read(data_root, record)
        except (IntegrityError, OSError, ValueError) as exc:
            extra = Reason(codes.QUARANTINE_COPY_FAILED, f"{type(exc).__name__}: {exc}", STAGE)
    quarantine_file(qroot, record, data, reasons + ((extra,) if extra else ()), hashed=not res.safe_name)
    return extra


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class _Prepared:
    """What every part of the stage needs before checking files: where the bytes are and what is there."""

    data_root: Path
    mirror: Mirror | None
    label: str
    entries: list[InputEntry]
    yaml_record: FileRecord
    class_names: list[str]


def prepare_source(source: Any, layout: RunLayout, storage_options: Mapping[str, Any] | None,
             workers: int) -> _Prepared:
    mirror: Mirror | None = None
    if is_remote(source):
        try:
            mirror = mirror_source(source, layout.root / "source", workers=max(4, workers),
                                   storage_options=storage_options)
        except (OSError, ValueError) as exc:  # no bucket, no access, unreachable endpoint
            raise DatasetError(f"cannot read dataset source {source_label(source)}: "
                               f"{type(exc).__name__}: {exc}") from exc
        data_root = mirror.data_root
    else:
        data_root = Path(os.path.abspath(source))
        if not data_root.is_dir():
            raise DatasetError(f"dataset source {data_root} is not a directory")
    entries = list_entries(data_root, mirror)
    yaml_record, class_names = _read_class_names(data_root, entries)
    return _Prepared(data_root, mirror, source_label(source), entries, yaml_record, class_names)


def check_entries(prep: _Prepared, todo: list[InputEntry], config: IntegrityConfig, layout: RunLayout,
                   workers: int) -> dict[str, FileResult]:
    n_classes = len(prep.class_names)

    def check_batch(batch: list[InputEntry]) -> list[FileResult]:
        return [check_entry(prep.data_root, e, config, n_classes, run_root=layout.root) for e in batch]

    results: dict[str, FileResult] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Small batches: one future per file costs more than checking a small label file.
        for batch in pool.map(check_batch, _batches(todo, BATCH)):
            for r in batch:
                results[r.record.path] = r
    return results


def run_integrity(
    source: Any,
    layout: RunLayout,
    *,
    config: IntegrityConfig | None = None,
    reference_manifest: str | None = None,
    reference_digest: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> StageResult:
    """Check a YOLO dataset and write the integrity manifest. See the module docstring and docs/integrity.md.

    ``source``: a local directory (used in place), an ``ObjectStoragePath``/``UPath``, or a
    ``scheme://`` URI (mirrored into ``layout.root / "source"``). ``reference_manifest``: the
    last trusted manifest to diff against (its digest is checked when ``reference_digest`` is given).
    Raises :class:`DatasetError` when nothing can be checked, :class:`IntegrityFailed` (after writing
    everything) when a "fail" policy fired.
    """
    config, workers, reference, prep = start_run(source, layout, config, reference_manifest, reference_digest,
                                              storage_options)
    todo = [e for e in prep.entries if e.path != DATA_YAML]
    log.info("integrity: %d files under %s, %d workers", len(prep.entries), prep.label, workers)
    results = check_entries(prep, todo, config, layout, workers)
    return finish_run(prep, results, layout, config, reference, workers)


def start_run(source: Any, layout: RunLayout, config: IntegrityConfig | None, reference_manifest: str | None,
           reference_digest: str | None, storage_options: Mapping[str, Any] | None,
           ) -> tuple[IntegrityConfig, int, Manifest | None, _Prepared]:
    config = config or IntegrityConfig()
    configure_pillow(config.max_pixels)
    workers = config.workers or os.cpu_count() or 1
    # The reference first: a forged or missing reference must fail before any work is done.
    if reference_manifest and not reference_digest:
        raise DatasetError(f"reference_manifest {reference_manifest!r} was given without reference_digest: a "
                           "reference is trusted only against its digest (the manifest_digest of that run's "
                           "integrity result)")
    reference = read_manifest(reference_manifest, expected_digest=reference_digest) if reference_manifest else None
    layout.stage(STAGE).mkdir(parents=True, exist_ok=True)
    return config, workers, reference, prepare_source(source, layout, storage_options, workers)


def finish_run(prep: _Prepared, results: dict[str, FileResult], layout: RunLayout, config: IntegrityConfig,
               reference: Manifest | None, workers: int) -> StageResult:
    """Everything after the per-file checks: dataset-level checks, policies, quarantine, manifest."""
    stage_dir, qroot = layout.stage(STAGE), layout.quarantine(STAGE)
    results = {**results, DATA_YAML: FileResult(prep.yaml_record)}
    malformed = sum(1 for r in results.values() if r.record.meta.get("exif_malformed"))
    if malformed:  # one line for the run: Pillow's per-entry warnings were collected, not logged
        log.warning("integrity: %d image(s) with malformed EXIF (meta exif_malformed; Pillow's warnings "
                    "suppressed)", malformed)
    findings, dataset_findings, tamper_summary = _file_findings(results, reference, stage_dir, config)
    gx = _run_gx(results, findings, dataset_findings, prep.class_names, config, layout)
    add_sample_findings(results, findings, config)
    records = _apply(prep.data_root, qroot, results, findings, config, workers)
    verdict, fired, facts = verdict_of(records.values(), dataset_findings, config)
    header = {"stage": STAGE, "format": HEADER_FORMAT, "source": prep.label, "mirrored": prep.mirror is not None,
              "class_names": prep.class_names, "config": config.to_header(),
              "gx": {"success": gx.success, "expectations": list(gx.expectations)}, "tamper": tamper_summary,
              **facts}
    counts = {"warned": sum(1 for r in records.values() if r.accepted and r.reasons),
              "labels": sum(1 for r in records.values() if r.kind == "label"),
              "labels_accepted": sum(1 for r in records.values() if r.kind == "label" and r.accepted)}
    figures = IntegrityFigures(
        verdict=verdict, gx_success=gx.success, gx_data_docs=str(gx.docs_index) if gx.docs_index else None,
        quarantine_dir=str(qroot), tamper_diff=str(stage_dir / TAMPER_DIFF_NAME) if tamper_summary else None,
        reference_digest=tamper_summary["reference_digest"] if tamper_summary else None)
    result = finish_stage(STAGE, stage_dir / MANIFEST_NAME, header, records.values(), data_root=prep.data_root,
                          figures=figures, counts=counts)
    log.info("integrity: verdict %s, %s, manifest %s", verdict, result.counts.to_dict(), result.manifest_digest)
    if verdict == FAIL:
        raise IntegrityFailed(f"integrity checks with policy 'fail' fired: {', '.join(fired)} "
                              f"(manifest {result.manifest_path}, {result.manifest_digest})", result)
    return result


def _file_findings(results: Mapping[str, FileResult], reference: Manifest | None, stage_dir: Path,
                   config: IntegrityConfig) -> tuple[dict[str, list[FileFinding]], list[FileFinding], dict | None]:
    """Per-file findings (own checks, pairing, tamper diff) and the dataset-level ones (removed files)."""
    findings: dict[str, list[FileFinding]] = {p: list(r.findings) for p, r in results.items()}
    for path, extra in _pairing_findings(results).items():
        findings[path].extend(extra)
    dataset_findings: list[FileFinding] = []
    tamper_summary = None
    if reference is not None:
        per_file, removed, tamper_summary = _tamper_findings(results, reference, stage_dir)
        for path, extra in per_file.items():
            findings[path].extend(extra)
        dataset_findings.extend(removed)
    # "accept" (background-image policies only) means: not even a warning.
    findings = {p: [f for f in fs if action_for(f.code, config) != ACCEPT] for p, fs in findings.items()}
    return findings, dataset_findings, tamper_summary


def _run_gx(results: Mapping[str, FileResult], findings: dict[str, list[FileFinding]], dataset_findings: list[FileFinding],
            class_names: list[str], config: IntegrityConfig, layout: RunLayout) -> Any:
    """The Great Expectations suite over the metadata tables; its findings join the others."""
    from secure_data.integrity.gx_suite import run_suite  # pulls in GX and pandas (~3 s, once per process)

    images, splits, classes = gx_tables(results, findings, class_names, config)
    gx = run_suite(images, splits, classes, config=config, docs_dir=layout.report / "gx")
    for path, extra in gx.row_findings.items():
        findings[path].extend(extra)
    dataset_findings.extend(gx.dataset_findings)
    return gx


def _apply(data_root: Path, qroot: Path, results: Mapping[str, FileResult], findings: Mapping[str, list[FileFinding]],
           config: IntegrityConfig, workers: int) -> dict[str, FileRecord]:
    """Findings -> records with reasons; rejected files quarantined (copied, hash re-checked) in parallel."""
    records: dict[str, FileRecord] = {}
    to_quarantine: list[tuple[FileResult, FileRecord, tuple[Reason, ...]]] = []
    for path, res in sorted(results.items()):
        reasons = tuple(Reason(f.code, f.detail, STAGE) for f in findings[path])
        base = res.record
        if worst_action(findings[path], config, path) in (QUARANTINE, FAIL):
            rec = base.quarantined(*reasons)
            to_quarantine.append((res, rec, reasons))
        else:
            rec = FileRecord(path=base.path, sha256=base.sha256, size=base.size, kind=base.kind, split=base.split,
                             sample=base.sample, reasons=reasons, meta=base.meta)
        records[path] = rec
    with ThreadPoolExecutor(max_workers=workers) as pool:
        extras = list(pool.map(lambda item: _copy_to_quarantine(data_root, qroot, *item), to_quarantine))
    for (_, rec, _), extra in zip(to_quarantine, extras, strict=True):
        if extra is not None:
            records[rec.path] = rec.quarantined(extra)
    return records
