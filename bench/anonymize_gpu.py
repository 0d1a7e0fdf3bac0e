"""GPU benchmark: 1920x1080 JPEGs, file to file, yolo11n at 640 px; our pipeline vs the stock YOLO.predict loop.

    .venv/bin/python bench/anonymize_gpu.py                       # one H100: --device cuda:0 --n 1024
    .venv/bin/python bench/anonymize_gpu.py --device cpu --n 8    # smoke test anywhere

Both sides read the same JPEG files and write anonymized JPEGs; model loading and a warm-up
batch are excluded from the timings.

* ours: ``run_anonymize_shard`` (verified read with SHA-256 against the manifest, nvJPEG decode on
  the GPU, GPU letterbox, fp16 forward of the model called directly, batched NMS, GPU blur,
  verification re-detection on the output at 0.1, nvJPEG encode, atomic writes, audit log).
  Measured with verification on (the default) and off.
* stock: ``YOLO(model).predict(source=<file list>, stream=True, batch=B, half=True)``, then per result
  OpenCV Gaussian blur of each box and ``cv2.imwrite``: what a user writes with the public API.

Model: ``--model demo`` (default) is the cached demo yolo11n (faces + plates, trained once on CPU;
copy ``.cache/models/`` along to skip training); ``--model yaml`` builds an untrained yolo11n from
``yolo11n.yaml`` (speed only: it finds nothing, so nothing is blurred). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / ".cache" / "ultralytics"))


def make_images(folder: Path, n: int, width: int, height: int, workers: int) -> list[Path]:
    """Synthetic scenes with faces and plates, written in parallel (a few seconds for 1024 on 16 cores)."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:05d}.jpg" for i in range(n)]
    todo = [(str(p), i, width, height) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        with ProcessPoolExecutor(max(1, workers)) as pool:
            list(pool.map(_make_one, todo, chunksize=8))
    return paths


def _make_one(job: tuple[str, int, int, int]) -> None:
    import cv2
    import numpy as np

    from secure_data_testkit.datasets import draw_sample

    path, seed, width, height = job
    img, _ = draw_sample(np.random.default_rng(seed), width, height)
    cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def model_file(kind: str, cache: Path) -> tuple[Path, str]:
    if kind == "demo":
        from secure_data_testkit.models import demo_detector

        return demo_detector()
    from ultralytics import YOLO

    path = cache / "yolo11n-untrained.pt"
    if not path.exists():
        YOLO("yolo11n.yaml").save(str(path))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def run_ours(engine, config, src_root: Path, work: Path, tag: str) -> dict:
    from secure_data.anonymize.shard import run_anonymize_shard
    from secure_data.dataset.stage import RunLayout
    from secure_data_testkit.manifests import upstream_for

    layout = RunLayout(work / f"ours-{tag}")
    upstream = upstream_for(src_root, layout)
    _sync(engine.device)
    engine.timings.clear()
    start = time.perf_counter()
    result = run_anonymize_shard(upstream, layout, config=config, engine=engine)
    _sync(engine.device)
    seconds = time.perf_counter() - start
    shutil.rmtree(layout.root, ignore_errors=True)
    return {"images": result["counts"]["images"], "seconds": seconds, "counts": result["counts"],
            "timings": {k: round(v, 2) for k, v in engine.timings.items()}}


def run_stock(model_path: Path, files: list[Path], out: Path, *, device: str, batch: int, imgsz: int,
              half: bool) -> dict:
    """The public-API loop: predict over the files, blur every box with OpenCV, write the file."""
    import cv2
    from ultralytics import YOLO

    model = YOLO(str(model_path))
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"imgsz": imgsz, "device": device, "quantize": 16 if half else 32, "batch": batch, "verbose": False,
              "stream": True,
              "conf": 0.25}
    for _ in model.predict(source=[str(f) for f in files[:batch]], **kwargs):  # warm-up, not timed
        pass
    _sync(device)
    boxes = 0
    start = time.perf_counter()
    for r in model.predict(source=[str(f) for f in files], **kwargs):
        img = r.orig_img
        for x1, y1, x2, y2 in r.boxes.xyxy.int().tolist():
            roi = img[y1:y2, x1:x2]
            if roi.size:
                k = max(3, (max(x2 - x1, y2 - y1) // 4) | 1)
                img[y1:y2, x1:x2] = cv2.GaussianBlur(roi, (k, k), 0)
            boxes += 1
        cv2.imwrite(str(out / Path(r.path).name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    _sync(device)
    seconds = time.perf_counter() - start
    return {"images": len(files), "seconds": seconds, "boxes": boxes}


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--model", choices=("demo", "yaml"), default="demo")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 2), help="read/write threads")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=REPO / ".cache" / "bench" / "anonymize-gpu")
    ap.add_argument("--skip-stock", action="store_true")
    args = ap.parse_args()

    import torch

    from secure_data.anonymize.config import AnonymizeConfig, DetectorSpec
    from secure_data.anonymize.engine import AnonymizeEngine

    on_gpu = args.device.startswith("cuda")
    src_root = args.workdir / f"src-{args.width}x{args.height}-n{args.n}"
    files = make_images(src_root / "images" / "train", args.n, args.width, args.height, args.workers)
    model_path, model_sha = model_file(args.model, args.workdir)
    work = Path(tempfile.mkdtemp(prefix="anon-gpu-", dir=args.workdir))
    results: dict[str, list[dict]] = {}
    try:
        for verify in (True, False):
            config = AnonymizeConfig(detectors=(DetectorSpec(str(model_path), model_sha),), imgsz=args.imgsz,
                                     batch_size=args.batch_size, device=args.device, verify=verify,
                                     read_workers=args.workers, write_workers=args.workers,
                                     prefetch_batches=3 if on_gpu else 2)
            engine = AnonymizeEngine(config)
            warm = src_root.parent / f"warm-{args.width}x{args.height}-b{args.batch_size}"
            if not warm.exists():  # one batch, to build kernels/plans before timing
                (warm / "images" / "train").mkdir(parents=True)
                for f in files[: args.batch_size]:
                    shutil.copyfile(f, warm / "images" / "train" / f.name)
            run_ours(engine, config, warm, work, f"warm-{verify}")
            key = "ours (verify on)" if verify else "ours (verify off)"
            results[key] = [run_ours(engine, config, src_root, work, f"{verify}-{r}") for r in range(args.rounds)]
            del engine
        if not args.skip_stock:
            results["stock YOLO.predict + cv2"] = [
                run_stock(model_path, files, work / f"stock-{r}", device=args.device, batch=args.batch_size,
                          imgsz=args.imgsz, half=on_gpu) for r in range(args.rounds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    device_name = torch.cuda.get_device_name(torch.device(args.device)) if on_gpu else platform.processor() or "CPU"
    print(f"## anonymize GPU benchmark, {dt.datetime.now().isoformat(timespec='seconds')}\n")
    print(f"- machine: {device_name}; {os.cpu_count()} CPU cores; torch {torch.__version__}")
    print(f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- images: {args.n} synthetic {args.width}x{args.height} JPEGs (q90), file to file; model "
          f"{args.model} yolo11n at {args.imgsz} px, batch {args.batch_size}, "
          f"{'fp16' if on_gpu else 'fp32'}\n")
    print("| pipeline | images/s (best) | rounds | notes |")
    print("| --- | --- | --- | --- |")
    best = {}
    for name, runs in results.items():
        ips = [r["images"] / r["seconds"] for r in runs]
        best[name] = max(ips)
        top = runs[ips.index(max(ips))]
        note = (json.dumps({k: top["counts"][k] for k in ("anonymized", "quarantined", "boxes", "residual_first_pass",
                                                            "residual_detections")}) + " " + json.dumps(top["timings"])
                if "counts" in top else f"boxes {top['boxes']}")
        print(f"| {name} | {max(ips):.1f} | {[round(x, 1) for x in ips]} | {note} |")
    if "stock YOLO.predict + cv2" in best:
        stock = best["stock YOLO.predict + cv2"]
        for name in ("ours (verify on)", "ours (verify off)"):
            print(f"\n{name} vs stock predict: {best[name] / stock:.2f}x", end="")
        print()


if __name__ == "__main__":
    main()
