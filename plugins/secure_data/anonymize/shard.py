"""The anonymize stage, one shard at a time (resumable); ``anonymize.merge`` merges them into the stage manifest.

Layout under ``RunLayout.stage("anonymize")``::

    data/                      the anonymized YOLO dataset (data_root of the stage)
    shards/00003-of-00008/     audit.jsonl, result.json, lock     (one folder per shard)
    audit.jsonl                merged audit, one line per image, sorted by path
    manifest.jsonl(.sha256)    the stage manifest

Sharding is by sample (``<split>/<stem>``), hashed, so the same image always
lands in the same shard whatever the worker count. Within a shard, records are
processed in fixed batches (sorted by path, ``batch_size`` at a time); a retry
skips a batch whose images all have valid audit lines and outputs, and
recomputes a partly done batch whole, with the same batch composition, so the
numbers (and therefore the bytes written) are the same as in an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_data.anonymize import codec
from secure_data.anonymize.audit import (
    ANONYMIZED,
    AUDIT_SCHEMA,
    QUARANTINED,
    AuditWriter,
    latest_by_path,
    read_audit_lines,
    write_canonical,
)
from secure_data.anonymize.config import AnonymizeConfig
from secure_data.anonymize.progress import Progress
from secure_data.anonymize.turns import CpuTurns
from secure_data.dataset.atomic import atomic_write_bytes, atomic_write_text
from secure_data.dataset.layout import UnsafePathError, safe_relpath
from secure_data.dataset.manifest import (
    FileRecord,
    IntegrityError,
    Manifest,
    Reason,
    canonical_json,
    sha256_hex,
    verified_read,
)
from secure_data.dataset.quarantine import REASON_SUFFIX, quarantine_file
from secure_data.dataset.stage import RunLayout, StageResult, open_upstream

STAGE = "anonymize"


class ResidualDetectionError(RuntimeError):
    """residual_policy="fail" and some image still showed a protected class after every pass."""


class ShardBusyError(RuntimeError):
    """Another process holds this shard's lock (two attempts of one task running at once)."""


def shard_of(key: str, count: int) -> int:
    """Deterministic shard of a sample key (stable across processes, machines and Python versions)."""
    if count < 1:
        raise ValueError("shard_count must be >= 1")
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def shard_key(record: FileRecord) -> str:
    return record.sample or record.path


def shard_records(manifest: Manifest, index: int, count: int) -> list[FileRecord]:
    if not 0 <= index < count:
        raise ValueError(f"shard_index must be in [0, {count}), got {index}")
    return sorted(
        (r for r in manifest.records if r.kind == "image" and r.accepted and shard_of(shard_key(r), count) == index),
        key=lambda r: r.path,
    )


@dataclass(frozen=True)
class StagePaths:
    stage_dir: Path
    data_root: Path
    quarantine_root: Path

    @classmethod
    def of(cls, layout: RunLayout) -> StagePaths:
        return cls(layout.stage(STAGE), layout.stage(STAGE) / "data", layout.quarantine(STAGE))

    def shard_dir(self, index: int, count: int) -> Path:
        return self.stage_dir / "shards" / f"{index:05d}-of-{count:05d}"

    def output(self, relpath: str) -> Path:
        return self.data_root.joinpath(*safe_relpath(relpath).parts)

    def reason_file(self, relpath: str) -> Path:
        target = self.quarantine_root.joinpath(*safe_relpath(relpath).parts)
        return target.with_name(target.name + REASON_SUFFIX)


@contextlib.contextmanager
def _shard_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ShardBusyError(f"{path.parent} is being processed by another attempt") from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return sha256_hex(fh.read())
    except FileNotFoundError:
        return None


def _line_is_complete(line: Mapping[str, Any], paths: StagePaths) -> bool:
    """An audit line counts only if what it claims is on disk (the output, or the quarantine reason)."""
    if line.get("status") == ANONYMIZED:
        return sha256_file(paths.output(line["path"])) == line.get("output_sha256")
    if line.get("status") == QUARANTINED:
        return paths.reason_file(line["path"]).exists()
    return False


def _sweep_partial_writes(paths: StagePaths, records: Sequence[FileRecord]) -> int:
    """Remove temp files a killed try left next to this shard's outputs and quarantine copies.

    They are this stage's own unfinished writes, never input data; left alone they would show up
    as stray files in the published dataset.
    """
    names: dict[Path, set[str]] = {}
    for rec in records:
        out = paths.output(rec.path)
        names.setdefault(out.parent, set()).add(out.name)
        reason = paths.reason_file(rec.path)
        names.setdefault(reason.parent, set()).update({reason.name, reason.name.removesuffix(REASON_SUFFIX)})
    removed = 0
    for directory, wanted in names.items():
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
                stem = entry.name[1:].rsplit(".", 2)[0]
                if stem in wanted:
                    os.unlink(entry.path)
                    removed += 1
    return removed


# ---------------------------------------------------------------------------------------------- shard


@dataclass
class _Loaded:
    record: FileRecord
    data: bytes | None = None
    image: Any = None  # decoded tensor (CPU path) or None
    reason: Reason | None = None
    labels: tuple = ()  # (protected name, cx, cy, w, h) normalised, from the sample's label file


@dataclass(frozen=True)
class LabelGuide:
    """Which label boxes are protected: class id -> protected name, and each sample's label record."""

    protected: Mapping[int, str]
    records: Mapping[str, FileRecord]

    @classmethod
    def of(cls, manifest: Manifest, config: AnonymizeConfig) -> LabelGuide:
        from secure_data.anonymize.config import protected_name

        wanted = {n.lower() for n in config.label_classes}
        names: list[str] = []
        for rec in manifest.records:
            if rec.kind == "meta" and rec.accepted and isinstance(rec.meta.get("class_names"), list):
                names = [str(n) for n in rec.meta["class_names"]]
        protected = {i: protected_name(n, config.classes) for i, n in enumerate(names) if n.lower() in wanted}
        records = {r.sample: r for r in manifest.records if r.kind == "label" and r.accepted and r.sample}
        return cls(protected, records if protected else {})

    def read(self, root: str, record: FileRecord) -> tuple:
        """The protected boxes of ``record``'s label file (read once, hash-checked), normalised xywh."""
        rec = self.records.get(record.sample or "")
        if rec is None:
            return ()
        out = []
        for line in verified_read(root, rec).decode("utf-8", "replace").splitlines():
            parts = line.split()
            try:
                cls_id, values = int(float(parts[0])), [float(v) for v in parts[1:]]
            except (ValueError, IndexError):
                continue  # integrity already judged the file; a bad line here protects nothing less
            if cls_id not in self.protected or len(values) < 4:
                continue
            if len(values) == 4:
                cx, cy, w, h = values
            else:  # a segment: x1 y1 x2 y2 ... -> its bounding box
                xs, ys = values[0::2], values[1::2]
                cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
            out.append((self.protected[cls_id], cx, cy, w, h))
        return tuple(out)


def label_boxes(item: _Loaded) -> list:
    from secure_data.anonymize.detect import Box

    h, w = int(item.image.shape[1]), int(item.image.shape[2])
    return [Box((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, name, 1.0, "label")
            for name, cx, cy, bw, bh in item.labels]


def _load(root: str, record: FileRecord, decode_turns: CpuTurns | None, guide: LabelGuide | None = None) -> _Loaded:
    """Read once, verify against the manifest, (on the CPU path: ``decode_turns``) decode. Errors become reasons."""
    try:
        codec.output_suffix(record.path)
        data = verified_read(root, record)
        labels = guide.read(root, record) if guide is not None else ()
    except IntegrityError as exc:
        return _Loaded(record, reason=Reason("integrity_mismatch", str(exc), STAGE))
    except codec.DecodeError as exc:
        return _Loaded(record, reason=Reason("unsupported_format", str(exc), STAGE))
    except (OSError, UnsafePathError) as exc:
        return _Loaded(record, reason=Reason("unreadable", f"{type(exc).__name__}: {exc}", STAGE))
    if decode_turns is None:
        return _Loaded(record, data, labels=labels)
    try:
        with decode_turns.shared():
            return _Loaded(record, data, codec.decode_cpu(data), labels=labels)
    except codec.DecodeError as exc:
        return _Loaded(record, data, reason=Reason("decode_error", str(exc), STAGE))


def _base_line(engine, record: FileRecord) -> dict[str, Any]:
    return {
        "schema": AUDIT_SCHEMA, "path": record.path, "sample": record.sample, "input_sha256": record.sha256,
        "models": engine.models, "params_sha256": engine.params_sha256, "params": engine.params,
    }


def _write_anonymized(engine, paths: StagePaths, record: FileRecord, outcome, image, encoded: bytes | None):
    if encoded is None:  # CPU path: encode here, in a writer thread, between the next batch's forward passes
        with engine.turns.shared():
            encoded = engine.encode([image], [codec.output_suffix(record.path)])[0]
    atomic_write_bytes(paths.output(record.path), encoded)
    return {
        **_base_line(engine, record), "status": ANONYMIZED, "reasons": [],
        "output_sha256": sha256_hex(encoded), "output_size": len(encoded),
        "width": int(image.shape[2]), "height": int(image.shape[1]),
        "boxes": [f.to_list() for f in outcome.findings], "verification": outcome.verification(),
        "utility": outcome.utility(),
    }


def _write_quarantined(engine, paths: StagePaths, record: FileRecord, data: bytes | None, reason: Reason,
                       outcome=None) -> dict[str, Any]:
    quarantine_file(paths.quarantine_root, record, data, [reason])
    return {**_base_line(engine, record), "status": QUARANTINED, "reasons": [reason.to_dict()],
            "output_sha256": None, "output_size": None, "width": None, "height": None,
            "boxes": [f.to_list() for f in outcome.findings] if outcome is not None else [],
            "verification": outcome.verification() if outcome is not None else None}


def _process_batch(engine, paths: StagePaths, loaded: list[_Loaded], skip: set[str], writers: ThreadPoolExecutor):
    """Run one fixed batch through the engine; return the futures of its audit lines, in record order."""
    on_gpu = engine.device_type == "cuda"
    ok = [item for item in loaded if item.reason is None]
    if on_gpu and ok:
        for item, img in zip(ok, engine.decode([item.data for item in ok]), strict=True):
            if isinstance(img, codec.DecodeError):
                item.reason = Reason("decode_error", str(img), STAGE)
            else:
                item.image = img
        ok = [item for item in ok if item.reason is None]
    outcomes = dict(zip((id(i) for i in ok), engine.anonymize([i.image for i in ok], [label_boxes(i) for i in ok]),
                        strict=True)) if ok else {}
    encoded: dict[int, bytes] = {}
    if on_gpu:  # one batched nvJPEG call for every clean image still to write
        todo = [i for i in ok if outcomes[id(i)].clean and i.record.path not in skip]
        if todo:
            blobs = engine.encode([i.image for i in todo], [codec.output_suffix(i.record.path) for i in todo])
            encoded = {id(i): b for i, b in zip(todo, blobs, strict=True)}
    futures: list[Future] = []
    for item in loaded:
        if item.record.path in skip:
            continue
        if item.reason is not None:
            futures.append(writers.submit(_write_quarantined, engine, paths, item.record, item.data, item.reason))
            continue
        outcome = outcomes[id(item)]
        if outcome.clean:
            futures.append(writers.submit(_write_anonymized, engine, paths, item.record, outcome, item.image,
                                          encoded.get(id(item))))
        else:
            reason = Reason("residual_detection", (
                f"{outcome.residual_per_pass[-1]} protected-class detection(s) left after "
                f"{len(outcome.residual_per_pass)} verification pass(es)"), STAGE)
            futures.append(writers.submit(_write_quarantined, engine, paths, item.record, item.data, reason, outcome))
    return futures


def run_anonymize_shard(
    upstream: StageResult | Mapping[str, Any],
    layout: RunLayout,
    *,
    config: AnonymizeConfig,
    shard_index: int = 0,
    shard_count: int = 1,
    engine=None,
    progress_interval_s: float = 5.0,
) -> dict[str, Any]:
    """Anonymize shard ``shard_index`` of ``shard_count``; resumable. Returns a JSON-able shard result.

    ``engine``: an :class:`~secure_data.anonymize.engine.AnonymizeEngine` to reuse (models stay loaded).
    Progress (done/total, images/s, ETA) is logged at most every ``progress_interval_s`` seconds.
    """
    from secure_data.anonymize.engine import AnonymizeEngine

    up, manifest = open_upstream(upstream)
    records = shard_records(manifest, shard_index, shard_count)
    paths = StagePaths.of(layout)
    shard_dir = paths.shard_dir(shard_index, shard_count)
    load_started = time.perf_counter()
    engine = engine or AnonymizeEngine(config)
    model_load_s = time.perf_counter() - load_started
    guide = LabelGuide.of(manifest, config)
    audit_path = shard_dir / "audit.jsonl"
    started = time.perf_counter()  # after model load: the rate and ETA are the work's, not the loading's
    started_at = time.time()
    with _shard_lock(shard_dir / "lock"):
        if audit_path.exists():  # a retry: clear what the killed try was half-way through writing
            _sweep_partial_writes(paths, records)
        previous = latest_by_path(read_audit_lines(audit_path, repair=True), engine.params_sha256)
        done = {p for p, line in previous.items() if _line_is_complete(line, paths)}
        size = config.batch_size
        batches = [records[i:i + size] for i in range(0, len(records), size)]
        todo = [b for b in batches if any(r.path not in done for r in b)]
        processed = sum(1 for b in todo for r in b if r.path not in done)
        # Numbered like the mapped task's map index (0-based), so the log and the grid agree.
        progress = Progress(f"anonymize shard {shard_index} (of {shard_count})", total=len(records),
                            already=len(records) - processed, interval_s=progress_interval_s)
        progress.start()
        decode_turns = engine.turns if engine.device_type == "cpu" else None
        with ThreadPoolExecutor(config.read_workers, thread_name_prefix="anon-read") as readers, \
                ThreadPoolExecutor(config.write_workers, thread_name_prefix="anon-write") as writers, \
                AuditWriter(audit_path) as audit:
            inflight: deque[list[Future]] = deque()

            def prefetch(batch: Sequence[FileRecord]) -> None:
                inflight.append([readers.submit(_load, up.data_root, r, decode_turns, guide) for r in batch])

            for batch in todo[: config.prefetch_batches]:
                prefetch(batch)
            uncommitted: list[Future] | None = None
            for k in range(len(todo)):
                loaded = [f.result() for f in inflight.popleft()]
                if k + config.prefetch_batches < len(todo):
                    prefetch(todo[k + config.prefetch_batches])
                futures = _process_batch(engine, paths, loaded, done, writers)
                if uncommitted is not None:  # write-behind: batch k-1 is made durable while k computes
                    _commit(audit, uncommitted, progress)
                uncommitted = futures
            if uncommitted is not None:
                _commit(audit, uncommitted, progress)
        elapsed = time.perf_counter() - started
        final = latest_by_path(read_audit_lines(audit_path), engine.params_sha256)
        missing = [r.path for r in records if r.path not in final]
        if missing:
            raise RuntimeError(f"shard {shard_index}/{shard_count}: no audit line for {len(missing)} image(s), "
                               f"e.g. {missing[:3]}")
        lines = [final[r.path] for r in records]
        audit_digest = write_canonical(audit_path, lines)
        result = {
            "stage": STAGE, "shard_index": shard_index, "shard_count": shard_count,
            "upstream_manifest_digest": up.manifest_digest, "params_sha256": engine.params_sha256,
            "models": engine.models, "device": engine.device,
            "audit_path": str(audit_path), "audit_digest": audit_digest,
            "counts": audit_counts(lines), "processed": processed, "resumed": len(records) - processed,
            "elapsed_s": round(elapsed, 3), "model_load_s": round(model_load_s, 3),
            "started_at": round(started_at, 3), "finished_at": round(started_at + elapsed, 3),
            "images_per_s": round(processed / elapsed, 2) if processed and elapsed > 0 else None,
            "step_seconds": {k: round(v, 3) for k, v in sorted(engine.timings.items())},
            "verifiers": [{"name": v.name, "sha256": v.sha256, "kind": v.spec.kind} for v in engine.verifiers],
            "self_checked": engine.self_checked, "independent": engine.independent,
        }
        atomic_write_text(shard_dir / "result.json", canonical_json(result) + "\n")
    if config.residual_policy == "fail" and result["counts"]["quarantined_residual"]:
        raise ResidualDetectionError(
            f"shard {shard_index}/{shard_count}: {result['counts']['quarantined_residual']} image(s) still show a "
            f"protected class after {config.max_passes} re-obfuscation pass(es) (quarantined; see {audit_path})")
    return result


def _commit(audit: AuditWriter, futures: list[Future], progress: Progress) -> None:
    lines = [f.result() for f in futures]
    audit.commit(lines)
    progress.add(len(lines))


def audit_counts(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Run figures from audit lines. ``residual_first_pass``: detections the verifier found after the
    first obfuscation; ``residual_detections``: detections still found after the last pass (those
    images are quarantined, never published): the goal for both is zero."""
    counts: dict[str, Any] = {"images": 0, ANONYMIZED: 0, QUARANTINED: 0, "boxes": 0, "residual_first_pass": 0,
                              "residual_detections": 0, "reobfuscated_images": 0, "quarantined_residual": 0,
                              "boxes_per_class": {}, "boxes_per_source": {}}
    per_class: dict[str, int] = counts["boxes_per_class"]
    per_source: dict[str, int] = counts["boxes_per_source"]
    area, area_n, outside, outside_n = 0.0, 0, 0.0, 0
    for line in lines:
        counts["images"] += 1
        counts[line["status"]] += 1
        for box in line.get("boxes") or ():
            counts["boxes"] += 1
            per_class[box[4]] = per_class.get(box[4], 0) + 1
            per_source[box[6]] = per_source.get(box[6], 0) + 1
        utility = line.get("utility") or {}
        if line["status"] == ANONYMIZED and utility:
            area += utility.get("area_fraction") or 0.0
            area_n += 1
            if utility.get("area_outside_labels") is not None:
                outside += utility["area_outside_labels"] * (utility.get("area_fraction") or 0.0)
                outside_n += 1
        per_pass = (line.get("verification") or {}).get("residual_per_pass") or []
        counts["residual_first_pass"] += per_pass[0] if per_pass else 0
        counts["residual_detections"] += per_pass[-1] if per_pass else 0
        counts["reobfuscated_images"] += int(line["status"] == ANONYMIZED and len(per_pass) > 1)
        counts["quarantined_residual"] += int(line["status"] == QUARANTINED and bool(per_pass))
    counts["boxes_per_class"] = dict(sorted(per_class.items()))
    counts["boxes_per_source"] = dict(sorted(per_source.items()))
    # Utility: the mean share of an image that was obfuscated, and the mean share obfuscated outside the
    # dataset's own labelled protected boxes (over images that have labels): what obfuscation costs.
    counts["area_obfuscated"] = round(area / area_n, 6) if area_n else 0.0
    counts["area_outside_labels"] = round(outside / outside_n, 6) if outside_n else None
    counts["withheld"] = counts["quarantined_residual"]
    return counts
