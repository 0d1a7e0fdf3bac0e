"""`make demo`: the whole chain for real, end to end, then a one-line JSON summary.

1. start an OpenBao server and seed it with the policy bundle (sanitizer / trainer AppRoles, Transit keys);
2. write a demo dataset (generated faces/plates + Ultralytics' real photos bus.jpg and zidane.jpg),
   or use ``--source DIR`` (any YOLO-layout dataset);
3. prepare the demo detector (cached) and the CenterFace face model;
4. start Airflow (API server, scheduler, DAG processor, triggerer; LocalExecutor; SQLite), or with
   ``--executor celery`` a multi-worker deployment: Debian's Redis and PostgreSQL, CeleryExecutor and
   three workers (sanitize, gpu, train), each its own Unix user holding only its own identity;
5. trigger ``secure_pretraining_sanitization`` through the REST API, wait for it and for the
   Asset-triggered ``secure_training`` run;
6. print the report path and the summary; stop every process started here.

Secrets (AppRole secret_ids) travel to Airflow only as environment variables of the
processes started here; nothing secret is written to disk or printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins"))

from secure_data_testkit.demo import run_demo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", help="YOLO-layout dataset directory (default: generated demo dataset)")
    parser.add_argument("--out", default=str(REPO_ROOT / "out" / "demo"),
                        help="output folder (default: out/demo; each run gets a timestamped subfolder)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for both DAG runs")
    parser.add_argument("--conf", default="{}", type=json.loads,
                        help='extra DAG params as JSON, e.g. \'{"backbone_check": true, "mode": "pixelate"}\'')
    parser.add_argument("--executor", choices=["local", "celery"], default="local",
                        help="local: LocalExecutor + SQLite; celery: Redis, PostgreSQL, three Celery workers")
    args = parser.parse_args(argv)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(args.out) / stamp
    started = time.monotonic()
    demo = run_demo
    if args.executor == "celery":
        from secure_data_testkit.celery_stack import run_celery_demo as demo
    summary = demo(workdir, Path(args.source) if args.source else None, timeout=args.timeout, conf=args.conf,
                   log=lambda msg: print(f"[demo] {msg}", flush=True))
    summary["seconds"] = round(time.monotonic() - started, 1)
    latest = Path(args.out) / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink() if latest.is_symlink() else shutil.rmtree(latest)
    os.symlink(stamp, latest)
    print(f"[demo] report: {summary.get('report_path')}")
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
