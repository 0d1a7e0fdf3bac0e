"""Poisoning detection measured against seeded attacks: recall, precision, clean false-positive rate.

    python bench/poison_attacks.py                     # 600 images (480 train / 120 val) at 160 px
    python bench/poison_attacks.py --images 400 --attacks label_flip trigger_random --rates 0.1
    python bench/poison_attacks.py --backbone          # + feature_outlier (spectral signatures, demo yolo11n)
    python bench/poison_attacks.py --suite outside     # IBM ART BadDet attacks + copy transforms, real photos,
                                                       # ours beside CleanVision and cleanlab (bench/poison_peers.py)
    python bench/poison_attacks.py --suite outside --images 300 --sources photos --rates 0.05 --peers

For every attack and poison rate, the same clean dataset is poisoned by
``secure_data_testkit.attacks.inject_attack``, the full stage (``run_poisoning``)
runs on an integrity-style manifest, and the samples named as suspects by any
finding (warn or quarantine) are compared with the ground truth. The clean row is
the same dataset without an attack: every suspect there is a false positive.

``--backbone`` runs the stage twice per dataset, without and with the optional
``feature_outlier`` check (the cached demo detector, ``testing.models.demo_detector``,
pinned by its SHA-256): overall figures with it on and off, both stage times, and the
check's own TP/flagged column (what it catches alone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from dataclasses import replace  # noqa: E402

from secure_data.dataset.stage import RunLayout, StageResult  # noqa: E402
from secure_data.poisoning import PoisoningConfig, run_poisoning  # noqa: E402
from secure_data.poisoning.findings import read_findings  # noqa: E402
from secure_data_testkit.attacks import (  # noqa: E402
    ATTACKS,
    RATES,
    inject_attack,
    integrity_like_manifest,
    make_clean_dataset,
)


def screen(root: Path, work: Path, config: PoisoningConfig) -> tuple[dict[str, set[str]], StageResult, float]:
    upstream = integrity_like_manifest(root, work / "integrity")
    t0 = time.perf_counter()
    result = run_poisoning(upstream, RunLayout(work / "run"), config=config)
    elapsed = time.perf_counter() - t0
    by_check: dict[str, set[str]] = {}
    for f in read_findings(result.extra["findings_path"]):
        by_check.setdefault(f["check"], set()).update(f["suspects"])
    return by_check, result, elapsed


def measure(flagged: set[str], poisoned: frozenset[str]) -> dict[str, float]:
    tp = len(flagged & poisoned)
    return {
        "tp": tp, "fp": len(flagged - poisoned), "fn": len(poisoned - flagged),
        "recall": tp / len(poisoned) if poisoned else 1.0,
        "precision": tp / len(flagged) if flagged else 1.0,
    }


# Harder variants at 5 %: where the detectors start to miss (reported, not tuned away).
STRESS = (
    ("trigger_random, 8 px patch", "trigger_random", {"trigger_px": 8}),
    ("trigger_random, JPEG q75", "trigger_random", {"jpeg_quality": 75}),
    ("trigger_vanish, 8 px, q75", "trigger_vanish", {"trigger_px": 8, "jpeg_quality": 75}),
    ("box_shift, 0.25-0.5 box", "box_shift", {"shift": (0.25, 0.5)}),
    ("box_shift, 0.1-0.25 box", "box_shift", {"shift": (0.1, 0.25)}),
    ("box_shift, 0.05-0.1 box", "box_shift", {"shift": (0.05, 0.1)}),
    ("split_leak, crop <= 4 %/side", "split_leak", {"crop_max": 0.04}),
    ("label_flip, crop <= 4 %/side", "label_flip", {"crop_max": 0.04}),
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600, help="total images (80%% train, 20%% val)")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=ATTACKS)
    ap.add_argument("--rates", nargs="*", type=float, default=list(RATES))
    ap.add_argument("--clean-seeds", type=int, default=3, help="clean datasets (seeds) for the false-positive rate")
    ap.add_argument("--no-stress", action="store_true", help="skip the harder variants")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--backbone", action="store_true",
                    help="also run with the feature_outlier check (demo yolo11n; trains it once if not cached)")
    ap.add_argument("--backbone-device", default="auto")
    ap.add_argument("--suite", choices=("own", "outside"), default="own",
                    help="own: this project's generator (above); outside: IBM ART BadDet attacks and copy "
                         "transforms on generated scenes and real photographs, with peers")
    ap.add_argument("--sources", nargs="*", default=["generated", "photos"], choices=("generated", "photos"))
    ap.add_argument("--photo-size", type=int, default=224)
    ap.add_argument("--art-attacks", nargs="*", default=None, help="default: all four BadDet attacks")
    ap.add_argument("--triggers", nargs="*", default=["patch", "blended"],
                    choices=("patch", "blended", "blended_grey"),
                    help="outside suite: patch = opaque two-colour checkerboard, blended = scikit-image's logo at "
                         "alpha 0.5, blended_grey = that logo in grey levels (no colour for the colour codes)")
    ap.add_argument("--transforms", nargs="*", default=None, help="copy transforms (default: all)")
    ap.add_argument("--copy-attacks", nargs="*", default=["label_flip", "split_leak"])
    ap.add_argument("--peers", nargs="*", default=["cleanvision", "cleanlab"], choices=("cleanvision", "cleanlab"))
    ap.add_argument("--no-model", action="store_true", help="outside suite: ours without the pinned detector only")
    ap.add_argument("--copy-only", action="store_true", help="outside suite: only the copy attacks")
    ap.add_argument("--photos-all", action="store_true",
                    help="outside suite: also crop the photographs the demo detector was trained on as negatives "
                         "(default: left out, so the 'with model' column is not judged on its training data)")
    args = ap.parse_args(argv)
    if args.suite == "outside":
        from poison_outside import run_outside

        return run_outside(args, argv)

    config = PoisoningConfig()
    on_config = None
    if args.backbone:
        from secure_data_testkit.models import demo_detector

        model, sha = demo_detector()
        on_config = replace(config, backbone_model=str(model), backbone_model_sha256=sha,
                            backbone_device=args.backbone_device)
        run = _screen_both(config, on_config)
    else:
        def run(root: Path, work: Path) -> dict:
            by_check, _, secs = screen(root, work, config)
            return {"by_check": by_check, "seconds": secs}
    n_train = int(round(args.images * 0.8))
    rows = []
    with tempfile.TemporaryDirectory(prefix="poison-bench-") as tmp:
        tmp = Path(tmp)
        clean = make_clean_dataset(tmp / "clean", n_train=n_train, n_val=args.images - n_train,
                                   size=args.size, seed=args.seed)
        for k in range(args.clean_seeds):
            root = clean if k == 0 else make_clean_dataset(
                tmp / f"clean{k}", n_train=n_train, n_val=args.images - n_train, size=args.size, seed=args.seed + k)
            got = run(root, tmp / f"w-clean{k}")
            by_check = got["by_check"]
            flagged = set().union(*by_check.values()) if by_check else set()
            rows.append({"attack": f"none (clean, seed {args.seed + k})", "rate": 0.0, "poisoned": 0,
                         "flagged": len(flagged), "fpr": len(flagged) / args.images, "images": args.images,
                         "seconds": got["seconds"],
                         "checks": {c: len(v) for c, v in sorted(by_check.items())},
                         **_off_columns(got, frozenset())})
        jobs = [(attack, attack, rate, {}) for attack in args.attacks for rate in args.rates]
        if not args.no_stress:
            jobs += [(name, attack, 0.05, kw) for name, attack, kw in STRESS]
        for name, attack, rate, kw in jobs:
            tag = f"{len(rows)}-{attack}-{rate}"
            ds = inject_attack(clean, tmp / tag, attack=attack, rate=rate, seed=args.seed, **kw)
            got = run(ds.root, tmp / f"w-{tag}")
            by_check = got["by_check"]
            flagged = set().union(*by_check.values()) if by_check else set()
            m = measure(flagged, ds.poisoned)
            rows.append({"attack": name, "rate": rate, "poisoned": len(ds.poisoned), "flagged": len(flagged),
                         **m, "seconds": got["seconds"], "stress": bool(kw),
                         "checks": {c: f"{len(v & ds.poisoned)}/{len(v)}" for c, v in sorted(by_check.items())},
                         **_off_columns(got, ds.poisoned)})

    print(f"# poisoning detection vs seeded attacks  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"# machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"# command: python bench/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# dataset: {args.images} images ({n_train} train / {args.images - n_train} val), {args.size} px, "
          f"seed {args.seed}; flagged = named as suspect by any finding (warn or quarantine)")
    if args.backbone:
        print(f"# backbone: feature_outlier on ({on_config.backbone_model} sha256 {on_config.backbone_model_sha256[:12]}..., "
              f"device {on_config.backbone_device}, z > {on_config.feature_outlier_z:g}); figures with it on, "
              "'off' columns from a second run without it on the same data")
        _print_backbone_table(rows)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1, sort_keys=True, default=str))
        return 0
    print()
    print("| attack | rate | poisoned | flagged | recall | precision | clean FPR | stage s | per check (TP/flagged) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r.get("stress") and not any(x.get("stress") for x in rows[:rows.index(r)]):
            print("| *harder variants (5 %)* | | | | | | | | |")
        if r["attack"].startswith("none"):
            print(f"| {r['attack']} | 0 | 0 | {r['flagged']} | - | - | {r['fpr']:.4f} | {r['seconds']:.1f} | "
                  f"{r['checks']} |")
        else:
            print(f"| {r['attack']} | {r['rate']:.2f} | {r['poisoned']} | {r['flagged']} | {r['recall']:.3f} | "
                  f"{r['precision']:.3f} | - | {r['seconds']:.1f} | {r['checks']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, sort_keys=True))
    return 0


FEATURE_CHECK = "feature_outlier"


def _screen_both(off: PoisoningConfig, on: PoisoningConfig):
    """Screen each dataset without and with the backbone check (same data, same machine, back to back)."""
    def run(root: Path, work: Path) -> dict:
        by_off, _, secs_off = screen(root, work / "off", off)
        by_on, _, secs_on = screen(root, work / "on", on)
        return {"by_check": by_on, "seconds": secs_on, "by_check_off": by_off, "seconds_off": secs_off}

    return run


def _off_columns(got: dict, poisoned: frozenset[str]) -> dict:
    if "by_check_off" not in got:
        return {}
    by_off = got["by_check_off"]
    flagged = set().union(*by_off.values()) if by_off else set()
    feat = got["by_check"].get(FEATURE_CHECK, set())
    return {"off": {"flagged": len(flagged), **measure(flagged, poisoned), "seconds": got["seconds_off"]},
            "feature": f"{len(feat & poisoned)}/{len(feat)}"}


def _print_backbone_table(rows: list[dict]) -> None:
    print()
    print("| attack | rate | poisoned | flagged on (off) | recall on (off) | precision on (off) | clean FPR on (off) "
          "| stage s on (off) | feature_outlier alone (TP/flagged) | other checks (TP/flagged) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r.get("stress") and not any(x.get("stress") for x in rows[:rows.index(r)]):
            print("| *harder variants (5 %)* | | | | | | | | | |")
        off = r["off"]
        others = {c: v for c, v in r["checks"].items() if c != FEATURE_CHECK}
        secs = f"{r['seconds']:.1f} ({off['seconds']:.1f})"
        if r["attack"].startswith("none"):
            print(f"| {r['attack']} | 0 | 0 | {r['flagged']} ({off['flagged']}) | - | - | "
                  f"{r['fpr']:.4f} ({off['flagged'] / r['images']:.4f}) | {secs} | "
                  f"{r['checks'].get(FEATURE_CHECK, 0)} flagged | {others} |")
        else:
            print(f"| {r['attack']} | {r['rate']:.2f} | {r['poisoned']} | {r['flagged']} ({off['flagged']}) | "
                  f"{r['recall']:.3f} ({off['recall']:.3f}) | {r['precision']:.3f} ({off['precision']:.3f}) | - | "
                  f"{secs} | {r['feature']} | {others} |")


if __name__ == "__main__":
    raise SystemExit(main())
