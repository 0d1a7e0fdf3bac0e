"""The run report built from a real anonymize run (shards + merge), not from hand-made stage results."""

from __future__ import annotations

import re

from secure_data.anonymize import AnonymizeConfig, DetectorSpec, merge_anonymize, run_anonymize_shard
from secure_data.dataset.manifest import read_manifest
from secure_data.dataset.stage import RunLayout
from secure_data.report.build import build_report, thumbnails
from secure_data_testkit.datasets import make_yolo_dataset


def test_report_tiles_and_thumbnails_come_from_what_the_stage_wrote(tmp_path, demo_model, make_upstream):
    root = make_yolo_dataset(tmp_path / "ds", n_train=6, n_val=2, width=320, height=240, seed=21)
    layout = RunLayout.for_run(tmp_path / "runs", "secure_pretraining_sanitization", "manual__2026-12-02T00:00:00")
    up = make_upstream(root, layout)
    path, sha = demo_model
    cfg = AnonymizeConfig(detectors=(DetectorSpec(str(path), sha),), imgsz=320, batch_size=4, device="cpu")
    shards = [run_anonymize_shard(up, layout, config=cfg, shard_index=i, shard_count=2) for i in range(2)]
    merged = merge_anonymize(up, layout, shards, cfg)
    f = merged.figures  # typed: a figure the stage stops writing is a TypeError, not an empty tile
    assert f.images_per_second and f.images_per_second > 0
    assert f.boxes == sum(f.boxes_per_class.values()) > 0
    assert f.withheld == f.quarantined_residual
    assert 0 < f.area_obfuscated < 1 and f.area_outside_labels is not None

    html = build_report(layout, {"integrity": up.to_xcom(), "anonymize": merged.to_xcom()},
                        dag_id="secure_pretraining_sanitization", run_id="manual__2026-12-02T00:00:00").read_text()
    rate = re.search(r'id="n-rate">([^<]*)<', html).group(1)
    assert rate not in ("-", "") and float(rate) > 0, rate
    assert f'id="n-boxes">{f.boxes}<' in html
    assert f'id="n-withheld">{f.withheld}<' in html

    # Thumbnails: the stage manifest's per-image box counts, most first, and they match the audit.
    manifest = read_manifest(merged.manifest_path, expected_digest=merged.manifest_digest)
    boxes = {r.path: r.meta["anonymized_boxes"] for r in manifest.records if r.kind == "image" and r.accepted}
    thumbs = thumbnails(merged)
    counts = [n for _, _, n in thumbs]
    assert counts == sorted(counts, reverse=True) and counts[0] == max(boxes.values()) > 0
    assert all(boxes[p] == n for p, _, n in thumbs)
