"""Per-check false-positive calibration of the presence checks on clean data (issue 14).

``python bench/poison_calibrate.py [--images 200] [--seed 1]``

The presence checks (``unlabelled_object``, ``phantom_box``, ``detector_class_conflict``) compare
labels with the pinned domain model; their thresholds decide how many clean samples they name. This
runs the model once over clean datasets that the benchmark does *not* evaluate on (seed 1 by default;
``bench/poison_attacks.py`` uses seed 0): the generated scenes and the real-photograph set
(``secure_data_testkit.attacks.make_photo_dataset``), and prints, per check and threshold, the share
of clean images it would flag. The defaults in ``PoisoningConfig`` are the loosest thresholds that
keep every check at <= 0.5 % of clean images on both sources.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from secure_data.dataset.manifest import read_manifest
from secure_data.poisoning import PoisoningConfig
from secure_data.poisoning.features import decode_bgr
from secure_data.poisoning.presence import PresenceDetector, compare_with_detections, label_xyxy
from secure_data.poisoning.samples import collect_samples
from secure_data_testkit.attacks import integrity_like_manifest, make_clean_dataset, make_photo_dataset
from secure_data_testkit.datasets import CLASS_NAMES

CONFS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
LOW_CONFS = (0.05, 0.02, 0.01, 0.005, 0.002, 0.001)


def detections_for(root: Path, work: Path, config: PoisoningConfig):
    upstream = integrity_like_manifest(root, work / "integrity")
    records = read_manifest(upstream.manifest_path, expected_digest=upstream.manifest_digest).records
    samples = [s for s in collect_samples(records) if s.image is not None]
    det = PresenceDetector(config, dict(enumerate(CLASS_NAMES)))
    out = []
    for start in range(0, len(samples), 32):
        part = samples[start:start + 32]
        images = [decode_bgr((root / s.image.path).read_bytes()) for s in part]
        for s, img, dets in zip(part, images, det.detect(images), strict=True):
            h, w = img.shape[:2]
            out.append((s, label_xyxy(s, w, h), dets))
    return out


def flagged(rows, config: PoisoningConfig) -> dict[str, int]:
    counts = {"unlabelled_object": 0, "phantom_box": 0, "detector_class_conflict": 0}
    for _, labels, dets in rows:
        got = compare_with_detections(labels, dets, config)
        for check, items in got.items():
            counts[check] += bool(items)
    return counts


def main(argv=None) -> int:
    from secure_data_testkit.models import demo_detector

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    model, sha = demo_detector()
    base = replace(PoisoningConfig(), backbone_model=str(model), backbone_model_sha256=sha,
                   presence_low_conf=min(LOW_CONFS), presence_conf=0.5)
    n_train = int(round(args.images * 0.8))
    print(f"# presence-check calibration on clean data  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"# machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"# command: python bench/poison_calibrate.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# model: {Path(model).name} sha256 {sha[:12]}...; {args.images} images per source, seed {args.seed}")
    print()
    print("| source | check | threshold | clean images flagged |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="poison-calibrate-") as tmp:
        tmp = Path(tmp)
        for source in ("generated", "photos"):
            if source == "generated":
                root = make_clean_dataset(tmp / source, n_train=n_train, n_val=args.images - n_train, seed=args.seed)
            else:
                root = make_photo_dataset(tmp / source, n_train=n_train, n_val=args.images - n_train, seed=args.seed)
            rows = detections_for(root, tmp / f"w-{source}", base)
            n = len(rows)
            for conf in CONFS:
                c = flagged(rows, replace(base, presence_conf=conf, presence_low_conf=min(LOW_CONFS)))
                for check in ("unlabelled_object", "detector_class_conflict"):
                    print(f"| {source} | {check} | conf {conf} | {c[check]}/{n} ({100 * c[check] / n:.1f} %) |")
            for low in LOW_CONFS:
                c = flagged(rows, replace(base, presence_conf=max(0.5, low * 2), presence_low_conf=low))
                print(f"| {source} | phantom_box | low_conf {low} | {c['phantom_box']}/{n} "
                      f"({100 * c['phantom_box'] / n:.1f} %) |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
