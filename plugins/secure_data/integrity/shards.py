"""Sharded integrity runs for big datasets (dynamic task mapping): one shard checks a hash-chosen part
of the files, the merge does the dataset-level checks and writes the manifest, byte-identical to an
unsharded run's."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from secure_data.dataset.atomic import atomic_write_bytes
from secure_data.dataset.layout import DATA_YAML
from secure_data.dataset.manifest import FileRecord, IntegrityError, canonical_json, digest_of
from secure_data.dataset.stage import RunLayout, StageResult
from secure_data.integrity.codes import STAGE, FileFinding
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.files import FileResult, InputEntry
from secure_data.integrity.images import configure_pillow
from secure_data.integrity.run import DatasetError, check_entries, finish_run, prepare_source, start_run

log = logging.getLogger(__name__)

SHARD_SCHEMA = "secure-data/integrity-shard/v1"


def shard_of(entry: InputEntry, shards: int) -> int:
    """The shard an entry belongs to: by sample (an image and its label land together), else by path.
    A hash, not a position, so adding one file does not move every other file to another shard."""
    key = entry.sample or entry.path
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()[:8], "big") % shards


def _shard_file(layout: RunLayout, shard: int, shards: int) -> Path:
    return layout.stage(STAGE) / "shards" / f"{shard:05d}-of-{shards:05d}.jsonl"


def run_integrity_shard(
    source: Any,
    layout: RunLayout,
    *,
    shard: int,
    shards: int,
    config: IntegrityConfig | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Hash and check one shard of the files (for dynamic task mapping); ``merge_integrity`` finishes.

    Every shard lists the whole dataset (cheap) and checks the entries with ``shard_of(e) == shard``.
    An object-storage source is mirrored once per run: concurrent shards wait for the first one's
    copy (``mirror_source`` holds a lock). The per-file results go to
    ``<run>/integrity/shards/<i>-of-<n>.jsonl`` (written atomically); the return value is small:
    shard, shards, path, digest and counts.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    config = config or IntegrityConfig()
    configure_pillow(config.max_pixels)
    workers = config.workers or os.cpu_count() or 1
    prep = prepare_source(source, layout, storage_options, workers)
    todo = [e for e in prep.entries if e.path != DATA_YAML and shard_of(e, shards) == shard]
    results = check_entries(prep, todo, config, layout, workers)
    lines = [canonical_json({"schema": SHARD_SCHEMA, "shard": shard, "shards": shards, "source": prep.label,
                             "config": config.to_header()})]
    lines += [canonical_json(_result_to_dict(results[p])) for p in sorted(results)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path = _shard_file(layout, shard, shards)
    atomic_write_bytes(path, data)
    log.info("integrity shard %d/%d: %d of %d files checked", shard, shards, len(results), len(prep.entries))
    return {"shard": shard, "shards": shards, "path": str(path), "digest": digest_of(data), "files": len(results)}


def _result_to_dict(res: FileResult) -> dict[str, Any]:
    return {"record": res.record.to_dict(), "findings": [[f.code, f.detail] for f in res.findings],
            "readable": res.readable, "copyable": res.copyable, "safe_name": res.safe_name}


def _result_from_dict(row: Mapping[str, Any]) -> FileResult:
    return FileResult(record=FileRecord.from_dict(row["record"]),
                      findings=tuple(FileFinding(code, detail) for code, detail in row["findings"]),
                      readable=bool(row["readable"]), copyable=bool(row["copyable"]),
                      safe_name=bool(row["safe_name"]))


def _load_shards(shard_results: Iterable[Mapping[str, Any]], layout: RunLayout, config: IntegrityConfig,
                 label: str) -> tuple[int, dict[str, FileResult]]:
    shard_results = list(shard_results)
    if not shard_results:
        raise DatasetError("merge_integrity got no shard results")
    shards = {int(r["shards"]) for r in shard_results}
    if len(shards) != 1:
        raise DatasetError(f"shard results disagree on the number of shards: {sorted(shards)}")
    (n,) = shards
    have = sorted(int(r["shard"]) for r in shard_results)
    if have != list(range(n)):
        raise DatasetError(f"expected shards 0..{n - 1} exactly once, got {have}")
    results: dict[str, FileResult] = {}
    for r in sorted(shard_results, key=lambda r: int(r["shard"])):
        path = _shard_file(layout, int(r["shard"]), n)  # our own run folder, never a path from XCom
        data = path.read_bytes()
        if digest_of(data) != r["digest"]:
            raise IntegrityError(f"{path} changed after shard {r['shard']} wrote it")
        header, *rows = data.decode("utf-8").splitlines()
        head = json.loads(header)
        if head.get("schema") != SHARD_SCHEMA or head.get("source") != label \
                or head.get("config") != config.to_header():
            raise DatasetError(f"{path} was made for another source or configuration")
        for line in rows:
            res = _result_from_dict(json.loads(line))
            results[res.record.path] = res
    return n, results


def merge_integrity(
    source: Any,
    layout: RunLayout,
    shard_results: Iterable[Mapping[str, Any]],
    *,
    config: IntegrityConfig | None = None,
    reference_manifest: str | None = None,
    reference_digest: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> StageResult:
    """Finish a sharded integrity run: the dataset-level checks (pairing, tamper diff, Great
    Expectations, sample rule), quarantine and the manifest, exactly as ``run_integrity`` does.

    The merged manifest is byte-identical to an unsharded run's. Every listed file must be in
    exactly one shard: a file added after the shards ran, or one missing from them, fails loudly.
    """
    config, workers, reference, prep = start_run(source, layout, config, reference_manifest, reference_digest,
                                              storage_options)
    _, results = _load_shards(shard_results, layout, config, prep.label)
    listed = {e.path for e in prep.entries if e.path != DATA_YAML}
    if set(results) != listed:
        missing, extra = sorted(listed - set(results)), sorted(set(results) - listed)
        raise DatasetError(f"the shards do not cover the dataset as listed now: {len(missing)} file(s) not "
                           f"checked (e.g. {missing[:3]}), {len(extra)} no longer listed (e.g. {extra[:3]})")
    return finish_run(prep, results, layout, config, reference, workers)
