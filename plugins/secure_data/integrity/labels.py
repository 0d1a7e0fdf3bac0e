"""YOLO detection label checks: ``<class> <cx> <cy> <w> <h>`` per line, normalized to [0, 1].

A label is checked line by line; every bad line is reported (grouped by code, so a
10,000-line garbage file gives a handful of reasons, not 10,000). Only valid boxes
go into the record's ``meta["boxes"]``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from secure_data.integrity import codes
from secure_data.integrity.codes import FileFinding

_MAX_LINES_PER_REASON = 5  # how many offending line numbers a reason detail names


def _group(problems: dict[str, list[str]]) -> list[FileFinding]:
    out = []
    for code in sorted(problems):
        items = problems[code]
        shown = "; ".join(items[:_MAX_LINES_PER_REASON])
        more = f"; and {len(items) - _MAX_LINES_PER_REASON} more" if len(items) > _MAX_LINES_PER_REASON else ""
        out.append(FileFinding(code, f"{len(items)} line(s): {shown}{more}"))
    return out


def inspect_label(data: bytes, *, n_classes: int, tolerance: float) -> tuple[dict[str, Any], list[FileFinding]]:
    """Check one label file's bytes. Returns (meta, findings); never raises for bad input."""
    if not data.strip():
        return {"boxes": [], "n_boxes": 0}, [FileFinding(codes.LABEL_EMPTY, "zero bytes" if not data else "blank lines only")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {"boxes": [], "n_boxes": 0}, [FileFinding(codes.LABEL_NOT_UTF8, f"byte {exc.start} is not UTF-8")]

    problems: dict[str, list[str]] = defaultdict(list)
    boxes: list[list[float | int]] = []
    seen: set[tuple] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue  # blank lines are tolerated, as YOLO loaders do
        where = f"line {lineno}"
        if len(fields) < 5:
            problems[codes.LABEL_MISSING_FIELDS].append(f"{where}: {len(fields)} fields, expected 5")
            continue
        if len(fields) > 5:
            problems[codes.LABEL_EXTRA_FIELDS].append(f"{where}: {len(fields)} fields, expected 5")
            continue
        try:
            cls = int(fields[0])
        except ValueError:
            problems[codes.LABEL_PARSE_ERROR].append(f"{where}: class {fields[0][:20]!r} is not an integer")
            continue
        try:
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            problems[codes.LABEL_PARSE_ERROR].append(f"{where}: coordinates are not numbers")
            continue
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):
            problems[codes.LABEL_NON_FINITE].append(f"{where}: NaN or infinite coordinate")
            continue
        if not 0 <= cls < n_classes:
            problems[codes.LABEL_CLASS_OUT_OF_RANGE].append(f"{where}: class {cls} not in 0..{n_classes - 1}")
            continue
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
            problems[codes.LABEL_COORD_OUT_OF_RANGE].append(f"{where}: coordinate outside [0, 1]")
            continue
        if w <= 0.0 or h <= 0.0:
            problems[codes.LABEL_NONPOSITIVE_SIZE].append(f"{where}: width {w} height {h}")
            continue
        if (cx - w / 2 < -tolerance or cx + w / 2 > 1 + tolerance
                or cy - h / 2 < -tolerance or cy + h / 2 > 1 + tolerance):
            problems[codes.LABEL_BOX_OUTSIDE_IMAGE].append(f"{where}: box extends past the image edge")
            continue
        key = (cls, round(cx, 6), round(cy, 6), round(w, 6), round(h, 6))
        if key in seen:
            problems[codes.LABEL_DUPLICATE_BOX].append(f"{where}: same class and box as an earlier line")
            continue
        seen.add(key)
        boxes.append([cls, cx, cy, w, h])

    findings = _group(problems)
    if not boxes and not findings:
        findings.append(FileFinding(codes.LABEL_EMPTY, "blank lines only"))
    return {"boxes": boxes, "n_boxes": len(boxes)}, findings
