"""Shards partition the images; the merge yields the stage manifest, the audit and a complete YOLO dataset."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from secure_data.anonymize import (
    AnonymizeConfig,
    DetectorSpec,
    merge_anonymize,
    run_anonymize_shard,
    shard_of,
)
from secure_data.anonymize.audit import read_audit_lines
from secure_data.anonymize.engine import AnonymizeEngine
from secure_data.anonymize.shard import ResidualDetectionError
from secure_data.dataset.layout import walk_dataset
from secure_data.dataset.manifest import IntegrityError, read_manifest, sha256_hex, verified_read
from secure_data.dataset.stage import RunLayout, StageResult
from secure_data_testkit.datasets import make_yolo_dataset


@pytest.fixture(scope="module")
def engine(demo_model):
    path, sha = demo_model
    return AnonymizeEngine(AnonymizeConfig(detectors=(DetectorSpec(str(path), sha),), imgsz=160, batch_size=4,
                                           device="cpu"))


def test_shard_of_is_stable_and_spreads_samples():
    keys = [f"train/img_{i:05d}" for i in range(2000)]
    assert [shard_of(k, 7) for k in keys] == [shard_of(k, 7) for k in keys]
    sizes = Counter(shard_of(k, 8) for k in keys)
    assert set(sizes) == set(range(8)) and min(sizes.values()) > 180  # 250 expected per shard
    assert all(shard_of(k, 1) == 0 for k in keys)
    with pytest.raises(ValueError):
        shard_of("x", 0)


@pytest.fixture
def dataset(tmp_path, make_upstream):
    root = make_yolo_dataset(tmp_path / "ds", n_train=14, n_val=6, width=320, height=240, seed=42)
    (root / "images" / "train" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "labels" / "train" / "broken.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "notes.txt").write_text("an accepted non-image file\n")
    layout = RunLayout.for_run(tmp_path / "out", "dag", "run-1")
    up = make_upstream(root, layout)
    # Changed after the upstream stage recorded it: must be caught by verified_read, never used.
    victim = root / "images" / "val" / "val_00001.jpg"
    victim.write_bytes(victim.read_bytes()[:-10])
    return root, layout, up


def test_shards_and_merge_give_a_complete_audited_dataset(dataset, engine):
    root, layout, up = dataset
    results = [run_anonymize_shard(up, layout, config=engine.config, shard_index=i, shard_count=3, engine=engine)
               for i in range(3)]
    upstream = read_manifest(up.manifest_path, expected_digest=up.manifest_digest)
    images = [r for r in upstream.records if r.kind == "image"]
    assert sum(r["counts"]["images"] for r in results) == len(images) == 21
    seen = [line["path"] for r in results for line in read_audit_lines(r["audit_path"])]
    assert sorted(seen) == sorted(r.path for r in images)  # every image in exactly one shard

    merged = merge_anonymize(up, layout, results, engine.config)
    assert StageResult.from_xcom(json.loads(json.dumps(merged.to_xcom()))) == merged
    manifest = read_manifest(merged.manifest_path, expected_digest=merged.manifest_digest)
    by_path = manifest.by_path()
    assert set(by_path) == {r.path for r in upstream.records}
    counts = manifest.counts()
    assert counts["accepted"] + counts["quarantined"] == counts["files"] == len(upstream.records)

    reasons = {p: [x.code for x in r.reasons] for p, r in by_path.items() if not r.accepted}
    assert reasons["images/train/broken.jpg"] == ["decode_error"]
    assert reasons["labels/train/broken.txt"] == ["sample_quarantined"]
    assert reasons["images/val/val_00001.jpg"] == ["integrity_mismatch"]
    assert reasons["labels/val/val_00001.txt"] == ["sample_quarantined"]
    qroot = layout.quarantine("anonymize")
    for path in reasons:
        assert (qroot / (path + ".reason.json")).exists()

    data_root = Path(merged.data_root)
    upstream_by_path = upstream.by_path()
    for rec in manifest.records:
        if not rec.accepted:
            continue
        data = verified_read(data_root, rec)  # every accepted file is there, with the recorded hash
        if rec.kind == "image":
            assert rec.meta["input_sha256"] == upstream_by_path[rec.path].sha256 != rec.sha256
            assert rec.meta["has_exif"] is False and rec.meta["orientation"] == 1
        else:
            assert data == (root / rec.path).read_bytes()
    on_disk = {e.relpath for e in walk_dataset(data_root)}
    assert on_disk == {r.path for r in manifest.records if r.accepted}
    assert {"data.yaml", "notes.txt"} <= on_disk

    audit = Path(merged.extra["audit_path"]).read_bytes()
    assert "sha256:" + sha256_hex(audit) == merged.extra["audit_digest"]
    lines = [json.loads(x) for x in audit.splitlines()]
    assert [x["path"] for x in lines] == sorted(r.path for r in images)
    for x in lines:
        assert x["input_sha256"] == upstream_by_path[x["path"]].sha256
        assert set(x) >= {"output_sha256", "models", "params", "params_sha256", "boxes", "status", "reasons"}
        assert "pixels" not in json.dumps(x)
        if x["status"] == "anonymized":
            assert x["output_sha256"] == by_path[x["path"]].sha256 and x["verification"]["clean"]
    extra = merged.extra
    assert extra["residual_detections"] == sum(
        (x.get("verification") or {}).get("residual_per_pass", [0])[-1] for x in lines)
    assert extra["boxes"] == sum(extra["boxes_per_class"].values()) > 0
    assert extra["anonymized"] == counts["images_accepted"]


def test_merge_refuses_incomplete_or_altered_shards(dataset, engine):
    _, layout, up = dataset
    results = [run_anonymize_shard(up, layout, config=engine.config, shard_index=i, shard_count=2, engine=engine)
               for i in range(2)]
    with pytest.raises(ValueError, match="exactly once"):
        merge_anonymize(up, layout, results[:1], engine.config)
    other_model = AnonymizeConfig(detectors=(DetectorSpec("/m/other.pt", "cd" * 32),))
    with pytest.raises(ValueError, match="pins"):
        merge_anonymize(up, layout, results, other_model)
    audit = Path(results[1]["audit_path"])
    audit.write_bytes(audit.read_bytes().replace(b'"anonymized"', b'"anonymized" ', 1))
    with pytest.raises(IntegrityError, match="audit of shard 1"):
        merge_anonymize(up, layout, results, engine.config)


def test_a_changed_output_is_caught_at_merge(dataset, engine):
    _, layout, up = dataset
    results = [run_anonymize_shard(up, layout, config=engine.config, engine=engine)]
    line = next(x for x in read_audit_lines(results[0]["audit_path"]) if x["status"] == "anonymized")
    out = layout.stage("anonymize") / "data" / line["path"]
    out.write_bytes(out.read_bytes() + b"\x00")
    with pytest.raises(IntegrityError, match="missing or changed"):
        merge_anonymize(up, layout, results, engine.config)


def test_residual_policies(tmp_path, demo_model, make_upstream):
    root = make_yolo_dataset(tmp_path / "ds", n_train=8, n_val=0, width=320, height=240, seed=5)
    path, sha = demo_model
    # A light blur leaves a skin-coloured blob that the demo detector still calls a face at 0.05;
    # with on_residual="quarantine" there is no re-obfuscation pass, so those images are quarantined.
    strict = AnonymizeConfig(detectors=(DetectorSpec(str(path), sha),), imgsz=160, batch_size=4, device="cpu",
                             blur_sigma=0.15, verify_conf=0.05, on_residual="quarantine")
    layout = RunLayout.for_run(tmp_path / "out", "dag", "strict")
    up = make_upstream(root, layout)
    result = run_anonymize_shard(up, layout, config=strict)
    c = result["counts"]
    assert c["quarantined_residual"] >= 1 and c["quarantined"] == c["quarantined_residual"]
    assert c["residual_detections"] >= c["quarantined_residual"]
    merged = merge_anonymize(up, layout, [result], strict)
    bad = [r for r in read_manifest(merged.manifest_path).records if not r.accepted]
    assert {x.code for r in bad for x in r.reasons} == {"residual_detection", "sample_quarantined"}

    failing = AnonymizeConfig.from_dict({**strict.to_dict(), "residual_policy": "fail"})
    layout2 = RunLayout.for_run(tmp_path / "out", "dag", "fail")
    with pytest.raises(ResidualDetectionError, match="still show a protected class"):
        run_anonymize_shard(make_upstream(root, layout2), layout2, config=failing)


def test_progress_is_logged_with_counts_rate_and_eta(dataset, engine, caplog):
    import logging
    import re

    root, layout, up = dataset
    with caplog.at_level(logging.INFO, logger="secure_data.anonymize"):
        result = run_anonymize_shard(up, layout, config=engine.config, engine=engine, progress_interval_s=0)
    messages = [r.getMessage() for r in caplog.records]
    # Numbered by the map index (0-based, as the grid shows it); a first line as soon as the models are loaded.
    assert re.match(r"anonymize shard 0 \(of 1\): \d+ images to do, models loaded$", messages[0]), messages[:2]
    lines = [m for m in messages if re.match(r"anonymize shard 0 \(of 1\): \d+/\d+ images", m)]
    total = result["counts"]["images"]
    # one line per durable batch of 4, the last one at total/total
    assert len(lines) == -(-total // engine.config.batch_size), lines
    done = [int(re.search(r": (\d+)/(\d+) images", line).group(1)) for line in lines]
    assert done == sorted(done) and done[-1] == total
    assert all(re.search(r"\d+\.\d images/s, ETA ", line) for line in lines)
    assert lines[-1].endswith("ETA 0 s")

    caplog.clear()  # a re-run finds everything done: one line, all from the earlier try
    with caplog.at_level(logging.INFO, logger="secure_data.anonymize"):
        run_anonymize_shard(up, layout, config=engine.config, engine=engine, progress_interval_s=0)
    assert not [r for r in caplog.records if re.match(r"anonymize shard 0 \(of 1\): \d+/", r.getMessage())]
