"""Merge the anonymize shards into the stage: manifest, merged ``audit.jsonl``, a complete YOLO dataset.

Every shard's audit is checked against the digest its shard reported, every accepted upstream image
must have exactly one audit line for the same input bytes, and (by default) every anonymized output
is re-hashed against its audit line before the stage manifest is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from secure_data.anonymize.audit import (
    ANONYMIZED,
    QUARANTINED,
    latest_by_path,
    read_audit_lines,
    write_canonical,
)
from secure_data.anonymize.config import AnonymizeConfig
from secure_data.anonymize.shard import STAGE, StagePaths, audit_counts, sha256_file
from secure_data.dataset.atomic import atomic_write_bytes
from secure_data.dataset.manifest import FileRecord, IntegrityError, Reason, sha256_hex, verified_read
from secure_data.dataset.quarantine import quarantine_file
from secure_data.dataset.stage import AnonymizeFigures, RunLayout, StageResult, finish_stage, open_upstream


def _check_shards(up: StageResult, shard_results: Sequence[Mapping[str, Any]], config: AnonymizeConfig):
    if not shard_results:
        raise ValueError("no shard results to merge")
    count = int(shard_results[0]["shard_count"])
    indices = sorted(int(r["shard_index"]) for r in shard_results)
    if indices != list(range(count)) or any(int(r["shard_count"]) != count for r in shard_results):
        raise ValueError(f"shard results must cover shards 0..{count - 1} exactly once, got {indices}")
    pins = {s.name: s.model_sha256 for s in config.detectors + config.verifiers}
    for r in shard_results:
        if r["upstream_manifest_digest"] != up.manifest_digest:
            raise ValueError(f"shard {r['shard_index']} ran on manifest {r['upstream_manifest_digest']}, "
                             f"not {up.manifest_digest}")
        if dict(r["models"]) != pins:
            raise ValueError(f"shard {r['shard_index']} used models {r['models']}, configuration pins {pins}")
    return count


def merge_anonymize(
    upstream: StageResult | Mapping[str, Any],
    layout: RunLayout,
    shard_results: Sequence[Mapping[str, Any]],
    config: AnonymizeConfig,
    *,
    verify_outputs: bool = True,
) -> StageResult:
    """Merge shard audits into the stage manifest + audit.jsonl and complete the YOLO dataset under data/."""
    up = StageResult.from_xcom(upstream)
    shard_results = [dict(r) for r in shard_results]
    _check_shards(up, shard_results, config)
    up, manifest = open_upstream(up)
    paths = StagePaths.of(layout)

    lines: dict[str, dict] = {}
    for r in sorted(shard_results, key=lambda r: int(r["shard_index"])):
        data = Path(r["audit_path"]).read_bytes()
        if "sha256:" + sha256_hex(data) != r["audit_digest"]:
            raise IntegrityError(f"audit of shard {r['shard_index']} changed after the shard finished")
        for path, line in latest_by_path(read_audit_lines(r["audit_path"]), r["params_sha256"]).items():
            lines[path] = line

    images = [rec for rec in manifest.records if rec.kind == "image" and rec.accepted]
    missing = [rec.path for rec in images if rec.path not in lines]
    if missing:
        raise RuntimeError(f"{len(missing)} accepted image(s) have no audit line, e.g. {missing[:3]}")
    for rec in images:
        if lines[rec.path]["input_sha256"] != rec.sha256:
            raise IntegrityError(f"{rec.path}: audit input_sha256 differs from the upstream manifest")
    if verify_outputs:
        _verify_outputs(paths, [lines[rec.path] for rec in images if lines[rec.path]["status"] == ANONYMIZED])

    quarantined_samples = {rec.sample for rec in images if lines[rec.path]["status"] == QUARANTINED and rec.sample}
    out_records: list[FileRecord] = []
    for rec in manifest.records:
        if not rec.accepted:
            out_records.append(rec)
        elif rec.kind == "image":
            out_records.append(_image_record(rec, lines[rec.path]))
        elif rec.kind == "label" and rec.sample in quarantined_samples:
            data = verified_read(up.data_root, rec)
            reason = Reason("sample_quarantined", "the sample's image was quarantined by anonymize", STAGE)
            quarantine_file(paths.quarantine_root, rec, data, [reason])
            out_records.append(rec.quarantined(reason))
        else:  # labels, data.yaml, other accepted files: copied byte-for-byte, checked on the way
            atomic_write_bytes(paths.output(rec.path), verified_read(up.data_root, rec))
            out_records.append(rec)

    audit_digest = write_canonical(paths.stage_dir / "audit.jsonl", [lines[rec.path] for rec in images])
    params = sorted({r["params_sha256"] for r in shard_results})
    header = {"stage": STAGE, "upstream_stage": up.stage, "upstream_manifest_digest": up.manifest_digest,
              "params_sha256": params, "models": {s.name: s.model_sha256 for s in config.detectors + config.verifiers},
              "audit_digest": audit_digest}
    totals = audit_counts([lines[rec.path] for rec in images])
    totals.update(_throughput(shard_results, config))
    figures = AnonymizeFigures(audit_path=str(paths.stage_dir / "audit.jsonl"), audit_digest=audit_digest,
                               shards=len(shard_results), params_sha256=params, **totals)
    return finish_stage(STAGE, paths.stage_dir / "manifest.jsonl", header, out_records, data_root=paths.data_root,
                        figures=figures, upstream=manifest)


def _throughput(shard_results: Sequence[Mapping[str, Any]], config: AnonymizeConfig) -> dict[str, Any]:
    """The shards' figures: throughput over their working span (models loaded; shards may overlap),
    the models that detected and verified, and the seconds each step took over all shards."""
    processed = sum(int(r.get("processed") or 0) for r in shard_results)
    starts = [r["started_at"] for r in shard_results if r.get("started_at") is not None]
    ends = [r["finished_at"] for r in shard_results if r.get("finished_at") is not None]
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    first = shard_results[0]
    return {
        "images_per_second": round(processed / span, 3) if processed and span > 0 else None,
        "processed": processed,
        "detectors": [{"name": s.name, "sha256": s.model_sha256, "kind": s.kind} for s in config.detectors],
        "verifiers": first.get("verifiers") or [{"name": s.name, "sha256": s.model_sha256, "kind": s.kind}
                                                for s in config.verifiers],
        "independent": first.get("independent") or {},
        "self_checked": first.get("self_checked") or {},
        "step_seconds": {k: round(sum(float((r.get("step_seconds") or {}).get(k, 0.0)) for r in shard_results), 3)
                         for k in sorted({k for r in shard_results for k in (r.get("step_seconds") or {})})},
    }


merge_shards = merge_anonymize  # the name the issue uses for the same step


def _verify_outputs(paths: StagePaths, lines: Sequence[Mapping[str, Any]]) -> None:
    def check(line: Mapping[str, Any]) -> str | None:
        actual = sha256_file(paths.output(line["path"]))
        return None if actual == line["output_sha256"] else line["path"]

    workers = min(8, (os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        bad = [p for p in pool.map(check, lines) if p]
    if bad:
        raise IntegrityError(f"{len(bad)} anonymized output(s) missing or changed since their audit line, "
                             f"e.g. {bad[:3]}")


def _image_record(rec: FileRecord, line: Mapping[str, Any]) -> FileRecord:
    if line["status"] == QUARANTINED:
        reasons = [Reason.from_dict(r) for r in line.get("reasons") or ()]
        return rec.quarantined(*(reasons or [Reason("quarantined", "", STAGE)]))
    meta = {**dict(rec.meta), "input_sha256": rec.sha256, "width": line["width"], "height": line["height"],
            "channels": 3, "bit_depth": 8, "has_exif": False, "has_gps": False, "orientation": 1,
            "anonymized_boxes": len(line.get("boxes") or ())}
    return FileRecord(path=rec.path, sha256=line["output_sha256"], size=int(line["output_size"]), kind=rec.kind,
                      split=rec.split, sample=rec.sample, status=rec.status, reasons=rec.reasons, meta=meta)
