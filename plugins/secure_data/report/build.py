"""The per-run HTML report: counts per stage, quarantine table, findings, anonymization stats, thumbnails.

Thumbnails are made only from the anonymization stage's *outputs*, read through the
stage manifest (hash-verified), so a raw pixel can never reach the report. No secret
is ever an input here: the report is built from manifests and StageResults only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_data.dataset.atomic import atomic_write_text
from secure_data.dataset.manifest import IntegrityError, read_manifest, verified_read
from secure_data.dataset.stage import AnonymizeFigures, RunLayout, StageResult

STAGE_ORDER = ("integrity", "poisoning", "anonymize", "handoff")
MAX_THUMBNAILS = 24
THUMB_WIDTH = 192


WARNING, QUARANTINE = "warning", "quarantine"


@dataclass(frozen=True)
class QuarantineRow:
    path: str
    stage: str
    code: str
    detail: str
    severity: str = QUARANTINE  # "quarantine": why the file was withheld; "warning": noted, nothing withheld
    file_quarantined: bool = True  # the file itself was quarantined (by this or another reason)


def _load_stage(value: Mapping[str, Any] | None) -> StageResult | None:
    if not value:
        return None
    return StageResult.from_xcom(value)


def _warn_codes(integrity: StageResult | None) -> set[str]:
    """Integrity codes the run's policy only warns about (the integrity header records each code's action).
    Poisoning and anonymization add a reason only when they quarantine."""
    if integrity is None:
        return set()
    header = read_manifest(integrity.manifest_path, expected_digest=integrity.manifest_digest).header
    return {code for code, action in (header.get("actions") or {}).items() if action == "warn"}


def quarantine_rows(stage: StageResult, warn_codes: set[str] | frozenset[str] = frozenset()) -> list[QuarantineRow]:
    """Every reason on every file of ``stage``'s manifest, with its severity: a reason on an accepted file,
    or one whose code the policy only warns about, is a warning; the others are why a file was quarantined."""
    manifest = read_manifest(stage.manifest_path, expected_digest=stage.manifest_digest)
    rows = []
    for rec in manifest.records:
        for reason in rec.reasons or ():
            warning = rec.accepted or reason.code in warn_codes
            rows.append(QuarantineRow(rec.path, reason.stage, reason.code, reason.detail,
                                      WARNING if warning else QUARANTINE, not rec.accepted))
    rows.sort(key=lambda r: (r.path, r.severity != QUARANTINE, r.stage, r.code))
    return rows


def obfuscated_boxes(meta: Mapping[str, Any]) -> int:
    """Boxes the anonymization stage obfuscated in one output image (its manifest meta)."""
    return int(meta.get("anonymized_boxes") or 0)


def thumbnails(stage: StageResult, limit: int = MAX_THUMBNAILS) -> list[tuple[str, str, int]]:
    """(relpath, data URI, obfuscated boxes) of downscaled anonymized outputs, hash-verified against the
    stage manifest; the images with the most obfuscated boxes first."""
    import cv2
    import numpy as np

    manifest = read_manifest(stage.manifest_path, expected_digest=stage.manifest_digest)
    out: list[tuple[str, str, int]] = []
    # Put images that had boxes obfuscated first: they are the ones a reviewer wants to see.
    images = [r for r in manifest.records if r.accepted and r.kind == "image"]
    images.sort(key=lambda r: (-obfuscated_boxes(r.meta), r.path))
    for rec in images[:limit]:
        try:
            data = verified_read(stage.data_root, rec)
        except (IntegrityError, OSError):
            continue
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        scale = THUMB_WIDTH / max(1, w)
        thumb = cv2.resize(img, (THUMB_WIDTH, max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            out.append((rec.path, "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode(),
                        obfuscated_boxes(rec.meta)))
    return out


def _names(items: Any) -> list[str] | None:
    """Verifier identities as names (the stage may write names or {name, kind, ...} dicts)."""
    if not items:
        return None
    out = []
    for item in items:
        if isinstance(item, Mapping):
            out.append(str(item.get("name") or item.get("kind") or item.get("model_path") or "?"))
        else:
            out.append(str(item))
    return out


def _gx_href(layout: RunLayout, gx_docs: str | None) -> str | None:
    """The GX data docs as a link relative to the report: only a page inside the report folder is a
    link a reader can follow (served by the plugin)."""
    if not gx_docs:
        return None
    try:
        return Path(gx_docs).resolve().relative_to(layout.report.resolve()).as_posix()
    except ValueError:
        return None


def _read_jsonl(path: str | Path | None, limit: int = 500) -> list[dict[str, Any]]:
    if not path or not Path(path).exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
                if len(rows) >= limit:
                    break
    return rows


def build_report(
    layout: RunLayout,
    stages: Mapping[str, Mapping[str, Any] | None],
    *,
    dag_id: str,
    run_id: str,
    states: Mapping[str, str] | None = None,
) -> Path:
    """Render ``report/index.html`` (and ``summary.json``) for one run; return the HTML path."""
    import jinja2

    results = {name: _load_stage(stages.get(name)) for name in STAGE_ORDER}
    counts = {name: r.counts.to_dict() for name, r in results.items() if r is not None}
    integrity, poisoning, anonymize, handoff = (results[n] for n in STAGE_ORDER)
    last = next((results[n] for n in reversed(STAGE_ORDER[:3]) if results[n] is not None), None)
    rows = quarantine_rows(last, _warn_codes(integrity)) if last is not None else []
    findings = _read_jsonl(poisoning.figures.findings_path) if poisoning else []
    anon = anonymize.figures if anonymize else AnonymizeFigures()
    thumbs = thumbnails(anonymize) if anonymize else []
    gx_href = _gx_href(layout, integrity.figures.gx_data_docs if integrity else None)
    quarantine = [r for r in rows if r.file_quarantined]  # every reason on a withheld file, with its severity
    warnings = [r for r in rows if not r.file_quarantined]  # warnings on files that were kept
    summary = {
        "dag_id": dag_id,
        "run_id": run_id,
        "input": integrity.counts.files if integrity else None,
        "accepted": last.counts.accepted if last else None,
        "quarantined": last.counts.quarantined if last else None,
        "warnings": len(warnings) if last else None,
        "images_accepted": last.counts.images_accepted if last else None,
        "residual_detections": anon.residual_detections,
        "withheld": anon.withheld,
        "boxes_obfuscated": anon.boxes,
        "images_per_second": anon.images_per_second,
        "verifiers": _names(anon.verifiers),
        "findings": len(findings) if poisoning else None,
        "package_uri": handoff.figures.package_uri if handoff else None,
        "package_id": handoff.figures.package_id if handoff else None,
    }
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("secure_data.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("report.html.j2").render(
        dag_id=dag_id,
        run_id=run_id,
        summary=summary,
        counts=counts,
        stage_order=[n for n in STAGE_ORDER if n in counts],
        states=dict(states or {}),
        quarantine=quarantine,
        warnings=warnings,
        quarantined_files=len({r.path for r in quarantine}),
        warned_files=len({r.path for r in warnings}),
        findings=findings,
        boxes_per_class=sorted(anon.boxes_per_class.items()),
        anon=anon.to_dict() if anonymize else {},
        thumbs=thumbs,
        gx_href=gx_href,
        handoff=handoff.figures.to_dict() if handoff else {},
    )
    layout.report.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.report / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return atomic_write_text(layout.report / "index.html", html)
