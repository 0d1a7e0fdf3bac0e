"""Integrity stage throughput and memory, against a naive peer measured in the same run.

    python bench/integrity_bench.py [--small 10000] [--large 500] [--workers 1 2]

Datasets (generated, cached under .cache/bench-integrity/):
  small: N x 160x160 JPEGs (many files: per-file overhead, manifest size, memory flat in N)
  large: M x 1280x720 JPEGs (decode-bound)
Peer: a plain loop that reads, SHA-256s and fully decodes every image with Pillow
(the unavoidable work, without labels, policies, quarantine, GX or the manifest).
Peak RSS is sampled every 10 ms while a run is in flight, relative to the RSS before it
(GX and Pillow are imported before the first measurement).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    def __enter__(self):
        self.base = rss_mb()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def delta(self) -> float:
        return self.peak - self.base


def dataset(kind: str, n: int) -> Path:
    from secure_data_testkit.datasets import make_yolo_dataset

    size = (160, 160) if kind == "small" else (1280, 720)
    root = REPO / ".cache" / "bench-integrity" / f"{kind}-{n}"
    if not (root / "data.yaml").exists():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        make_yolo_dataset(tmp, n_train=n - n // 5, n_val=n // 5, width=size[0], height=size[1], seed=11)
        tmp.rename(root)
    return root


def peer(root: Path) -> tuple[int, int]:
    from PIL import Image

    n = nbytes = 0
    for path in sorted((root / "images").rglob("*.jpg")):
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        n += 1
        nbytes += len(data)
    return n, nbytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=500)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import great_expectations  # noqa: F401

    from secure_data.dataset.stage import RunLayout
    from secure_data.integrity import IntegrityConfig, run_integrity
    from secure_data.integrity.gx_suite import run_suite  # noqa: F401 - import GX before measuring

    rows = []
    for kind, n in (("small", args.small), ("large", args.large)):
        if n <= 0:
            continue
        root = dataset(kind, n)
        files = sum(1 for p in root.rglob("*") if p.is_file())
        mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
        t0 = time.perf_counter()
        with PeakRss() as mem:
            n_img, _ = peer(root)
        dt = time.perf_counter() - t0
        rows.append((kind, n_img, files, f"{mb:.0f}", "peer: read+sha256+Pillow decode, 1 thread", f"{dt:.2f}",
                     f"{n_img / dt:.0f}", f"{mb / dt:.0f}", f"{mem.delta:.0f}", "-"))
        for workers in args.workers:
            out = Path(tempfile.mkdtemp(prefix="bench-integrity-"))
            try:
                t0 = time.perf_counter()
                with PeakRss() as mem:
                    result = run_integrity(root, RunLayout.for_run(out, "bench", f"w{workers}"),
                                           config=IntegrityConfig(workers=workers))
                dt = time.perf_counter() - t0
                manifest_kb = Path(result.manifest_path).stat().st_size / 1024
            finally:
                shutil.rmtree(out, ignore_errors=True)
            rows.append((kind, n_img, files, f"{mb:.0f}", f"run_integrity, {workers} worker(s)", f"{dt:.2f}",
                         f"{n_img / dt:.0f}", f"{mb / dt:.0f}", f"{mem.delta:.0f}", f"{manifest_kb:.0f}"))

    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPU cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"command: python bench/integrity_bench.py {' '.join(sys.argv[1:])}")
    print()
    head = ("dataset", "images", "files", "MiB", "what", "seconds", "images/s", "MiB/s", "peak RSS +MiB",
            "manifest KiB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


if __name__ == "__main__":
    main()
