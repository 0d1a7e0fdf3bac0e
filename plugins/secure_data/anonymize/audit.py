"""The per-image audit log (JSON Lines): hashes, models, parameters, boxes, verification. No pixels.

A shard appends one line per image after the image's output (or quarantine
copy) is durably written, and fsyncs per batch; a killed task leaves at most a
torn last line, which :func:`load_audit` cuts off. When the shard finishes, the
file is rewritten in canonical form (one line per image, sorted by path), so an
interrupted-and-resumed shard ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from secure_data.dataset.atomic import atomic_write_bytes
from secure_data.dataset.manifest import canonical_json

AUDIT_SCHEMA = "secure-data/anonymize-audit/v1"
ANONYMIZED = "anonymized"
QUARANTINED = "quarantined"


class AuditWriter:
    """Append-only writer; ``commit`` makes a batch of lines durable (flush + fsync)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()

    def commit(self, lines: Iterable[Mapping[str, Any]]) -> None:
        data = b"".join((canonical_json(line) + "\n").encode("utf-8") for line in lines)
        if data:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_audit_lines(path: str | os.PathLike, *, repair: bool = False) -> list[dict[str, Any]]:
    """Every complete line; a torn tail (no newline, or not JSON) is ignored, and cut off if ``repair``."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    end = data.rfind(b"\n") + 1  # bytes after the last newline are a torn write
    lines: list[dict[str, Any]] = []
    good = 0  # offset just after the last line that parsed
    while good < end:
        nl = data.index(b"\n", good)
        raw = data[good:nl]
        if raw.strip():
            try:
                obj = json.loads(raw)
            except ValueError:
                break  # only a crash mid-write makes a bad line: nothing after it is trusted
            if not isinstance(obj, dict) or obj.get("schema") != AUDIT_SCHEMA:
                break
            lines.append(obj)
        good = nl + 1
    if repair and good < len(data):
        with open(p, "r+b") as fh:
            fh.truncate(good)
    return lines


def latest_by_path(lines: Iterable[Mapping[str, Any]], params_sha256: str | None = None) -> dict[str, dict]:
    """The last line per image path (a retry's line supersedes an earlier one), optionally for one config."""
    out: dict[str, dict] = {}
    for line in lines:
        if params_sha256 is None or line.get("params_sha256") == params_sha256:
            out[line["path"]] = dict(line)
    return out


def write_canonical(path: str | os.PathLike, lines: Iterable[Mapping[str, Any]]) -> str:
    """Rewrite atomically, one line per path, sorted; return ``sha256:<hex>`` of the bytes."""
    from secure_data.dataset.manifest import digest_of

    ordered = sorted(lines, key=lambda line: line["path"])
    data = b"".join((canonical_json(line) + "\n").encode("utf-8") for line in ordered)
    atomic_write_bytes(path, data)
    return digest_of(data)
