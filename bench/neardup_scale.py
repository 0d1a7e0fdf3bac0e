"""Near-duplicate search over a million 64-bit pHashes: time, peak memory, planted pairs found.

    python bench/neardup_scale.py                       # 1,000,000 hashes, radius 8, 10,000 planted pairs
    python bench/neardup_scale.py --n 200000 --radius 6

Hash model: real pHashes are not uniform random (the DC bit is always set, the
others are biased), which matters for bucket sizes. So per-bit probabilities are
estimated from the pHashes of 2,000 generated images and the million hashes are
drawn from them; ``--planted`` pairs are copies with 0..radius random bit flips.
Each measurement runs in its own process, so its peak RSS is its own.

Peer, same run: the exact brute-force scan (NumPy, vectorised per row) on a
subsample, extrapolated quadratically to n (it is quadratic by construction).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))


def bit_probabilities(n_images: int, seed: int):
    import cv2
    import numpy as np

    from secure_data.poisoning.phash import phash
    from secure_data_testkit.datasets import draw_sample

    rng = np.random.default_rng(seed)
    bits = np.zeros(64)
    for _ in range(n_images):
        img, _ = draw_sample(rng, 160, 160)
        h = phash(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        bits += [(h >> (63 - k)) & 1 for k in range(64)]
    return bits / n_images


def make_hashes(n: int, planted: int, radius: int, probs, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    base_n = n - planted
    p = np.asarray(probs)[None, :]
    parts = []
    for start in range(0, base_n, 65536):  # in slices: the generator must not dominate peak memory
        draws = rng.random((min(65536, base_n - start), 64)) < p
        parts.append(np.packbits(draws, axis=1).view(">u8").ravel().astype(np.uint64))
    hashes = np.concatenate(parts)
    src = rng.choice(base_n, size=planted, replace=False)
    copies = hashes[src].copy()
    flips = rng.integers(0, radius + 1, size=planted)
    for k in range(planted):
        for bit in rng.choice(64, size=int(flips[k]), replace=False):
            copies[k] ^= np.uint64(1) << np.uint64(int(bit))
    all_hashes = np.concatenate([hashes, copies])
    planted_pairs = {(int(s), base_n + k) for k, s in enumerate(src)}
    return all_hashes, planted_pairs


def worker(args) -> dict:
    import numpy as np

    from secure_data.poisoning.hamming_index import brute_force_pairs, near_pairs, plan_index

    probs = json.loads(Path(args.probs).read_text())
    hashes, planted = make_hashes(args.n, args.planted, args.radius, probs, args.seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if args.method == "mih":
        i, j, _ = near_pairs(hashes, args.radius)
    else:
        i, j, _ = brute_force_pairs(hashes, args.radius)
    secs = time.perf_counter() - t0
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    plan = plan_index(len(hashes), args.radius)
    return {
        "method": args.method, "n": int(len(hashes)), "radius": args.radius, "seconds": secs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_search_mb": rss_before, "pairs_found": len(found),
        "planted": len(planted), "planted_found": len(planted & found),
        "chunks": list(plan.widths), "probes_per_hash": plan.probes_per_hash,
        "distinct_hashes": int(len(np.unique(hashes))),
    }


def run_child(method: str, n: int, planted: int, radius: int, seed: int, probs: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--n", str(n), "--planted", str(planted),
           "--radius", str(radius), "--seed", str(seed), "--probs", str(probs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--radius", type=int, default=8)
    ap.add_argument("--planted", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-n", type=int, default=20_000, help="brute-force subsample size")
    ap.add_argument("--scaling", type=int, nargs="*", default=[100_000, 300_000], help="extra MIH sizes")
    ap.add_argument("--worker", choices=["mih", "brute"], help=argparse.SUPPRESS)
    ap.add_argument("--probs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.method = args.worker
        print(json.dumps(worker(args)))
        return 0

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probs_path = Path(tmp) / "probs.json"
        probs = bit_probabilities(2000, args.seed)
        probs_path.write_text(json.dumps(probs.tolist()))
        rows = []
        for n in sorted(set(args.scaling) | {args.n}):
            planted = max(1, args.planted * n // args.n)
            rows.append(run_child("mih", n, planted, args.radius, args.seed, probs_path))
        peer_planted = max(1, args.planted * args.peer_n // args.n)
        peer = run_child("brute", args.peer_n, peer_planted, args.radius, args.seed, probs_path)
        mih_small = run_child("mih", args.peer_n, peer_planted, args.radius, args.seed, probs_path)

    print(f"# near-duplicate search scale  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"# machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
          f" (one process, one core used)")
    print(f"# command: python bench/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# hashes: per-bit probabilities from 2,000 generated images' pHashes (min {probs.min():.2f}, "
          f"max {probs.max():.2f}); planted near-duplicates with 0..{args.radius} flipped bits")
    print()
    print("| method | n | radius | chunks (bits) | probes/hash | seconds | peak RSS MB (before search) "
          "| pairs found | planted found |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in [mih_small, *rows]:
        print(f"| multi-index hashing | {r['n']:,} | {r['radius']} | {r['chunks']} | {r['probes_per_hash']} | "
              f"{r['seconds']:.1f} | {r['peak_rss_mb']:.0f} ({r['rss_before_search_mb']:.0f}) | "
              f"{r['pairs_found']:,} | {r['planted_found']:,}/{r['planted']:,} |")
    extrapolated = peer["seconds"] * (args.n / args.peer_n) ** 2
    print(f"| brute force (peer) | {peer['n']:,} | {peer['radius']} | - | - | {peer['seconds']:.1f} | "
          f"{peer['peak_rss_mb']:.0f} ({peer['rss_before_search_mb']:.0f}) | {peer['pairs_found']:,} | "
          f"{peer['planted_found']:,}/{peer['planted']:,} |")
    print(f"| brute force, extrapolated (n^2) | {args.n:,} | {args.radius} | - | - | ~{extrapolated:,.0f} | - | - | - |")
    same = mih_small["pairs_found"] == peer["pairs_found"]
    print()
    print(f"MIH and brute force agree on the {args.peer_n:,}-hash subsample: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
