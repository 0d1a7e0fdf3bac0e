"""The end-to-end demo as a function: used by `make demo` (scripts/demo.py) and the end-to-end tests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SANITIZE_DAG = "secure_pretraining_sanitization"
TRAIN_DAG = "secure_training"


@dataclass
class DemoConfig:
    workdir: Path
    source: Path | None = None
    timeout: float = 1800
    n_train: int = 24
    n_val: int = 8
    image_size: tuple[int, int] = (320, 240)
    include_real_photos: bool = True
    conf_overrides: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print


def ultralytics_asset(name: str) -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / name


def make_demo_dataset(root: Path, cfg: DemoConfig) -> Path:
    """Generated faces/plates plus the two real photos with people that Ultralytics ships."""
    from secure_data.testing.datasets import make_yolo_dataset

    width, height = cfg.image_size
    make_yolo_dataset(root, n_train=cfg.n_train, n_val=cfg.n_val, width=width, height=height, seed=11)
    if cfg.include_real_photos:
        for name in ("bus.jpg", "zidane.jpg"):
            # Unlabelled real photos: background images for the labels, but they hold real faces.
            shutil.copyfile(ultralytics_asset(name), root / "images" / "train" / f"real_{name}")
    return root


def vault_conn_env(url: str, role_id: str, secret_id: str) -> str:
    """An Airflow connection (JSON form) for the hashicorp provider's AppRole login."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return json.dumps({
        "conn_type": "vault",
        "host": parts.hostname,
        "port": parts.port,
        "schema": parts.scheme,
        "login": role_id,
        "password": secret_id,
        "extra": {"auth_type": "approle", "kv_engine_version": 2},
    })


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    from secure_data.settings import report_url
    from secure_data.testing.airflow_stack import AirflowStack
    from secure_data.testing.models import centerface_model, demo_detector
    from secure_data.testing.openbao import OpenBaoServer
    from secure_data.vault.setup import bootstrap

    log = cfg.log
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    out_root = cfg.workdir / "runs"
    summary: dict[str, Any] = {"ok": False, "workdir": str(cfg.workdir)}
    bao = OpenBaoServer(workdir=cfg.workdir / "openbao")
    stack: AirflowStack | None = None
    try:
        log("starting OpenBao and applying the policy bundle")
        bao.start()
        creds = bootstrap(bao.url, bao.root_token)
        source = cfg.source or make_demo_dataset(cfg.workdir / "dataset", cfg)
        log(f"dataset: {source}")
        log("preparing the demo detector (trained once, then cached) and CenterFace")
        model_path, model_sha = demo_detector()
        face_path, face_sha = centerface_model()
        env = {
            "SECURE_DATA_OUTPUT_ROOT": str(out_root),
            "SECURE_DATA_PACKAGE_ROOT": str(cfg.workdir / "packages"),
            "AIRFLOW_CONN_VAULT_SANITIZER": vault_conn_env(bao.url, creds.sanitizer.role_id, creds.sanitizer.secret_id),
            "AIRFLOW_CONN_VAULT_TRAINER": vault_conn_env(bao.url, creds.trainer.role_id, creds.trainer.secret_id),
        }
        log("starting Airflow (api-server, scheduler, dag-processor, triggerer)")
        stack = AirflowStack(home=cfg.workdir / "airflow", extra_env=env).start()
        stack.wait_for_dag(SANITIZE_DAG)
        stack.wait_for_dag(TRAIN_DAG)
        conf = {
            "source": str(source),
            "model_path": str(model_path),
            "model_sha256": model_sha,
            "face_model_path": str(face_path),
            "face_model_sha256": face_sha,
            **cfg.conf_overrides,
        }
        triggered_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        run_id = stack.trigger(SANITIZE_DAG, conf)
        log(f"triggered {SANITIZE_DAG} run {run_id}; waiting")
        run = stack.wait_for_run(SANITIZE_DAG, run_id, cfg.timeout)
        summary.update(sanitize_run_id=run_id, sanitize_state=run["state"])
        summary.update(collect_summary(stack, run_id))
        summary["report_path"] = summary.get("report_path")
        summary["report_url"] = stack.url + report_url(SANITIZE_DAG, run_id)
        if run["state"] != "success":
            failed = [t["task_id"] for t in stack.task_instances(SANITIZE_DAG, run_id) if t["state"] == "failed"]
            summary["failed_tasks"] = failed
            log(f"sanitization run ended {run['state']}; failed tasks: {failed}; logs in {stack.home / 'logs'}")
            return summary
        log("waiting for the Asset-triggered training run")
        train = stack.wait_for_new_run(TRAIN_DAG, after=triggered_at, timeout=cfg.timeout)
        summary.update(training_run_id=train["dag_run_id"], training_state=train["state"])
        if train["state"] == "success":
            trained = stack.xcom(TRAIN_DAG, train["dag_run_id"], "train")
            summary["trained_package_id"] = (trained or {}).get("package_id")
        summary["ok"] = (train["state"] == "success"
                         and summary.get("trained_package_id") == summary.get("package_id"))
        return summary
    finally:
        if stack is not None:
            stack.stop()
        bao.close()


def collect_summary(stack, run_id: str) -> dict[str, Any]:
    """Non-secret figures of one sanitization run, from its XComs."""

    def pull(task_id: str) -> dict[str, Any]:
        try:
            return stack.xcom(SANITIZE_DAG, run_id, task_id) or {}
        except Exception:  # a stage that did not run has no XCom
            return {}

    integrity, anonymize, handoff, report = (pull(t) for t in ("integrity", "anonymize_merge", "handoff", "report"))
    last = anonymize or pull("poisoning") or integrity
    return {
        "input": integrity.get("counts", {}).get("files"),
        "accepted": last.get("counts", {}).get("accepted"),
        "quarantined": last.get("counts", {}).get("quarantined"),
        "images_accepted": last.get("counts", {}).get("images_accepted"),
        "residual_detections": anonymize.get("extra", {}).get("residual_detections"),
        "boxes_obfuscated": sum((anonymize.get("extra", {}).get("boxes_per_class") or {}).values()) or None,
        "package_uri": handoff.get("extra", {}).get("package_uri"),
        "package_id": handoff.get("extra", {}).get("package_id"),
        "report_path": report.get("report_path"),
    }
