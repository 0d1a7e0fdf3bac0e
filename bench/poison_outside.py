"""``bench/poison_attacks.py --suite outside``: attacks nobody here wrote, beside peers, on the same data.

Sources: ``generated`` (this project's scene generator) and ``photos`` (crops of the real
photographs shipped in the installed wheels, with the generator's objects drawn on them:
``secure_data_testkit.attacks.make_photo_dataset``). Attacks: IBM ART's four BadDet attacks
(``inject_art_attack``: ART picks the images and places the trigger at random positions; opaque
``patch`` or ``blended`` at 0.5) and copy attacks (``label_flip``, ``split_leak``) made with one
copy transform each (resize, crop, re-encode, flip, colour shift, shift+brighten+re-encode).

Per dataset, in the same run: ours with the pinned demo detector (presence + backbone checks on),
ours without any model (defaults), CleanVision and cleanlab (``bench/poison_peers.py``). Flagged =
named as a suspect by any finding, warn or quarantine; for peers see poison_peers.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from poison_attacks import measure, screen

from secure_data.poisoning import PoisoningConfig
from secure_data_testkit.attacks import (
    ART_ATTACKS,
    BENCH_TRIGGERS,
    COPY_TRANSFORMS,
    inject_art_attack,
    inject_attack,
    make_clean_dataset,
    make_photo_dataset,
    model_negative_photos,
)
from secure_data_testkit.datasets import CLASS_NAMES


def _flagged(by_check: dict[str, set[str]]) -> set[str]:
    return set().union(*by_check.values()) if by_check else set()


def run_outside(args, argv) -> int:
    from secure_data_testkit.models import demo_detector

    model, sha = demo_detector()
    plain = PoisoningConfig()
    with_model = None if args.no_model else replace(
        plain, backbone_model=str(model), backbone_model_sha256=sha, backbone_device=args.backbone_device)
    names = dict(enumerate(CLASS_NAMES))
    detector = None
    if "cleanlab" in args.peers and with_model is not None:
        from poison_peers import DetectorCache

        detector = DetectorCache(with_model, names)
    n_train = int(round(args.images * 0.8))
    n_val = args.images - n_train
    excluded = frozenset() if getattr(args, "photos_all", False) else model_negative_photos()
    rates = args.rates
    art_attacks = args.art_attacks or list(ART_ATTACKS)
    transforms = args.transforms or list(COPY_TRANSFORMS)
    rows = []

    def evaluate(root: Path, work: Path, poisoned: frozenset[str], row: dict) -> None:
        by_off, _, secs_off = screen(root, work / "off", plain)
        by_on, secs_on = by_off, secs_off
        if with_model is not None:
            by_on, _, secs_on = screen(root, work / "on", with_model)
            row["ours"] = {**measure(_flagged(by_on), poisoned), "flagged": len(_flagged(by_on)), "seconds": secs_on}
        row["ours_no_model"] = {**measure(_flagged(by_off), poisoned), "flagged": len(_flagged(by_off)),
                                "seconds": secs_off}
        row["checks"] = {c: f"{len(v & poisoned)}/{len(v)}" for c, v in sorted(by_on.items())}  # with model if run
        if "cleanvision" in args.peers:
            from poison_peers import cleanvision_flags

            t0 = time.perf_counter()
            got = cleanvision_flags(root)
            row["cleanvision"] = {**measure(got, poisoned), "flagged": len(got), "seconds": time.perf_counter() - t0}
        if detector is not None:
            from poison_peers import cleanlab_flags

            t0 = time.perf_counter()
            got = cleanlab_flags(root, detector)
            row["cleanlab"] = {**measure(got, poisoned), "flagged": len(got), "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(_row_line(row), flush=True, file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="poison-outside-") as tmp:
        tmp = Path(tmp)
        for source in args.sources:
            if source == "generated":
                clean = make_clean_dataset(tmp / source, n_train=n_train, n_val=n_val, size=args.size, seed=args.seed)
                px = max(8, round(args.size * 12 / 160))
            else:
                clean = make_photo_dataset(tmp / source, n_train=n_train, n_val=n_val, size=args.photo_size,
                                           seed=args.seed, exclude_photos=excluded)
                px = max(8, round(args.photo_size * 12 / 160))
            evaluate(clean, tmp / f"w-{source}-clean", frozenset(),
                     {"source": source, "attack": "none (clean)", "variant": "", "rate": 0.0, "poisoned": 0})
            jobs = [("art", a, t, r) for a in art_attacks for t in args.triggers for r in rates] \
                if not args.copy_only else []
            jobs += [("copy", a, t, r) for a in args.copy_attacks for t in transforms for r in rates]
            for family, attack, variant, rate in jobs:
                tag = f"{source}-{attack}-{variant}-{rate}"
                if family == "art":
                    kind, picture = BENCH_TRIGGERS[variant]
                    ds = inject_art_attack(clean, tmp / tag, attack=attack, rate=rate, trigger=kind,
                                           trigger_picture=picture, trigger_px=px, seed=args.seed)
                else:
                    ds = inject_attack(clean, tmp / tag, attack=attack, rate=rate, seed=args.seed,
                                       copy_kinds=(variant,), crop_max=0.05)
                evaluate(ds.root, tmp / f"w-{tag}", ds.poisoned,
                         {"source": source, "attack": attack, "variant": variant, "rate": rate,
                          "poisoned": len(ds.poisoned)})
    _print(rows, args, argv, model, sha, excluded)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, sort_keys=True, default=str))
    return 0


def _rp(m: dict | None) -> str:
    if m is None:
        return "-"
    return f"{m['recall']:.2f} / {m['precision']:.2f}"


def _row_line(r: dict) -> str:
    if r["poisoned"] == 0:
        cells = [f"{r[k]['flagged']} flagged" if k in r else "-" for k in ("ours", "ours_no_model", "cleanvision",
                                                                           "cleanlab")]
        return (f"| {r['source']} | {r['attack']} | | 0 | 0 | " + " | ".join(cells) + f" | {r['checks']} |")
    cells = [_rp(r.get(k)) for k in ("ours", "ours_no_model", "cleanvision", "cleanlab")]
    return (f"| {r['source']} | {r['attack']} | {r['variant']} | {r['rate']:.2f} | {r['poisoned']} | "
            + " | ".join(cells) + f" | {r['checks']} |")


def _print(rows, args, argv, model, sha, excluded: frozenset[str]) -> None:
    n = args.images
    print(f"# poisoning vs attacks nobody here wrote, beside peers  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"# machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"# command: python bench/poison_attacks.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# datasets: {n} images ({int(round(n * 0.8))} train / {n - int(round(n * 0.8))} val) per source; "
          f"generated {args.size} px, photos {args.photo_size} px; seed {args.seed}")
    print("# photographs: " + ("all shipped ones" if not excluded else
                               f"shipped ones except the demo detector's negatives ({', '.join(sorted(excluded))})"))
    print(f"# ours = stage with the pinned demo detector ({Path(model).name}, sha256 {sha[:12]}...: presence and "
          "backbone checks); ours, no model = defaults; cells: recall / precision; clean rows: samples flagged")
    print()
    print("| source | attack | trigger / transform | rate | poisoned | ours | ours, no model | CleanVision | cleanlab "
          "| our checks (TP/flagged, with model) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(_row_line(r))
