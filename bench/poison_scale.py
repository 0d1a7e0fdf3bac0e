"""Cost of the pattern checks as the dataset grows, and against an earlier revision on the same features.

    python bench/poison_scale.py                                  # 400, 1600, 3200 generated images
    python bench/poison_scale.py --sizes 400 1600 --reference 87f7dbc

Per size: a generated dataset (160 px, the test suite's generator) with IBM ART's BadDet object
disappearance attack (scikit-image's logo blended at 0.5, random positions) in 5 % of the train
images; one image pass (the stage's own: verified read, decode, features); then each pattern check
is timed on those features: ``blended_patch`` (colour block codes, translation vote),
``repeated_patch`` (grey constellations) and ``trigger_patch`` (label-seeded), and the whole analysis,
with what it names and the part of it ``trigger_search`` (seeded by the other checks) takes.

``--reference REV``: the same two checks' modules as they were at git revision ``REV`` are loaded
beside the current ones and run on the same features in the same process; the findings must be
identical (compared as their repr, evidence included), else the script fails. This is the "same work"
comparison of a speed-up: same inputs, same outputs, one machine, one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "bench"))


def _module_at(rev: str, rel: str, name: str):
    """Load ``rel`` (a file of the secure_data package) as it was at git revision ``rev``."""
    src = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="poison-scale-ref-")) / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="*", type=int, default=[400, 1600, 3200], help="images per dataset (80 %% train)")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", help="git revision whose blended.py and patches.py to time beside the current ones")
    args = ap.parse_args(argv)

    from _machine import print_header

    from secure_data.dataset.manifest import read_manifest
    from secure_data.poisoning import PoisoningConfig, blended, patches
    from secure_data.poisoning.duplicates import duplicate_groups, find_duplicate_edges, verify_edges
    from secure_data.poisoning.imagepass import image_pass
    from secure_data.poisoning.samples import collect_samples
    from secure_data.poisoning.stage import _template_sample, analyse
    from secure_data.poisoning.triggers import check_triggers
    from secure_data_testkit.attacks import inject_art_attack, integrity_like_manifest, make_clean_dataset

    ref = None
    if args.reference:
        ref = (_module_at(args.reference, "plugins/secure_data/poisoning/blended.py", "ref_blended"),
               _module_at(args.reference, "plugins/secure_data/poisoning/patches.py", "ref_patches"))

    print_header("poisoning pattern checks: cost by dataset size", "bench/poison_scale.py",
                 argv if argv is not None else sys.argv[1:])
    print(f"data: generated 160 px scenes (seed {args.seed}), ART BadDet ODA, logo blended at 0.5, "
          f"{args.rate:.0%} of train; one process" + (f"; reference: revision {args.reference}" if ref else ""))
    print()
    # the trigger search runs inside the whole analysis (it needs every other check's findings as seeds): timed there
    from secure_data.poisoning import stage as stage_module

    search_times: list[float] = []
    search = stage_module.check_trigger_search

    def timed_search(*a, **k):
        out, t = _timed(search, *a, **k)
        search_times.append(t)
        return out

    stage_module.check_trigger_search = timed_search
    head = ("| images | carriers | named by blended_patch (true / other) | image pass s | blended_patch s | repeated_patch s "
            "| trigger_patch s | whole analysis s | named by the whole analysis (true / other) | of them by trigger_search "
            "| trigger_search s |")
    if ref:
        head += f" blended_patch @{args.reference} s | repeated_patch @{args.reference} s | identical findings |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    config = PoisoningConfig()
    failed = False
    with tempfile.TemporaryDirectory(prefix="poison-scale-") as tmp:
        tmp = Path(tmp)
        for n in args.sizes:
            n_train = int(round(n * 0.8))
            clean = make_clean_dataset(tmp / f"clean-{n}", n_train=n_train, n_val=n - n_train, seed=args.seed)
            ds = inject_art_attack(clean, tmp / f"oda-{n}", attack="baddet_oda", rate=args.rate, trigger="blended",
                                   trigger_picture="logo", trigger_px=12, seed=args.seed)
            up = integrity_like_manifest(ds.root, tmp / f"integrity-{n}")
            samples = collect_samples(read_manifest(up.manifest_path, expected_digest=up.manifest_digest).records)
            pixels, t_pass = _timed(image_pass, str(ds.root), samples, config, _template_sample(samples, config))
            feats = pixels.features
            edges = verify_edges(find_duplicate_edges(samples, feats, config), pixels.load_gray, config)
            groups = duplicate_groups(len(samples), edges)
            seeds = {s.key for s in samples if not s.boxes}
            fb, t_b = _timed(blended.check_blended_patches, samples, feats, groups, config, {}, seeds,
                             maps=pixels.search_maps(range(len(samples))))
            fr, t_r = _timed(patches.check_repeated_patches, samples, feats, groups, config, {}, seeds)
            _, t_t = _timed(check_triggers, samples, feats, groups, seeds, config, {})
            pixels.close()
            whole, t_all = _timed(analyse, str(ds.root), samples, config)
            named = {k for f in fb for k in f.suspects}
            stage_named = {k for f in whole.findings for k in f.suspects}
            by_search = {k for f in whole.findings if f.check == "trigger_search" for k in f.suspects}
            row = (f"| {n} | {len(ds.poisoned)} | {len(named & ds.poisoned)} / {len(named - ds.poisoned)} | {t_pass:.2f} "
                   f"| {t_b:.2f} | {t_r:.2f} | {t_t:.2f} | {t_all:.2f} | {len(stage_named & ds.poisoned)} / "
                   f"{len(stage_named - ds.poisoned)} | {len(by_search & ds.poisoned)} / {len(by_search - ds.poisoned)} "
                   f"| {search_times[-1]:.2f} |")
            if ref:
                rb, t_rb = _timed(ref[0].check_blended_patches, samples, feats, groups, config, {}, seeds)
                rr, t_rr = _timed(ref[1].check_repeated_patches, samples, feats, groups, config, {}, seeds)
                same = repr(rb) == repr(fb) and repr(rr) == repr(fr)
                failed |= not same
                row += f" {t_rb:.2f} | {t_rr:.2f} | {'yes' if same else 'NO'} |"
            print(row, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
