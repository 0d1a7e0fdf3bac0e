"""secure_training: train on a sanitized package as soon as one is published.

Scheduled on the package Asset: every package the sanitization DAG publishes starts a
run. The run verifies the package signature with the trainer identity, decrypts it into
a private scratch directory (``/dev/shm``, mode 0700), checks every file's SHA-256,
trains an Ultralytics YOLO model there, and wipes the scratch space, also on failure.
It returns the id of the package it trained on (XCom ``return_value.package_id``).

Parse-time cost matters: no torch / ultralytics at module level, only inside the task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, Param

from secure_data import settings
from secure_data.assets import PACKAGE_ASSET
from secure_data.operators.handoff import PackageConsumerOperator
from secure_data.policy.anchors import data_key_name, signing_key_name, trainer_vault_conn_id

if TYPE_CHECKING:
    from secure_data.handoff.consumer import OpenedPackage


def _models_root() -> str:
    from secure_data.settings import output_root

    return os.environ.get("SECURE_DATA_MODELS_ROOT") or str(output_root() / "models")


def _offline_fonts() -> None:
    """Keep Ultralytics from fetching Arial.ttf: ``check_det_dataset`` calls ``check_font`` even with
    ``plots=False`` and YOLO_OFFLINE, and that does an HTTP HEAD to the Ultralytics assets host.
    ``check_font`` accepts any file of that name in its config dir; plots are off, so nothing is
    ever drawn with it. We place matplotlib's bundled DejaVuSans there under the expected names."""
    import shutil

    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = Path(USER_CONFIG_DIR) / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundled, target)


def train_yolo(package: OpenedPackage, *, epochs: int = 1, imgsz: int = 64, batch: int = 4,
               device: str = "cpu", models_root: str | None = None) -> dict[str, Any]:
    """Train yolo11n (from its YAML: no weight download) on the decrypted package; non-secret summary."""
    import hashlib

    os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no hub, no telemetry
    from ultralytics import YOLO

    _offline_fonts()
    if package.data_yaml is None:
        raise ValueError(f"package {package.package_id} has no data.yaml; cannot train")
    project = Path(models_root or _models_root()) / package.package_id
    model = YOLO("yolo11n.yaml")
    model.train(
        data=str(package.data_yaml), epochs=int(epochs), imgsz=int(imgsz), batch=int(batch), device=device,
        workers=0, amp=False, plots=False, project=str(project), name="train", exist_ok=True, seed=0,
        deterministic=True, verbose=False,
    )
    weights = Path(model.trainer.best if Path(model.trainer.best).exists() else model.trainer.last)
    metrics = {k: round(float(v), 6) for k, v in (model.trainer.metrics or {}).items()}
    return {
        "weights": str(weights),
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),  # pin it before loading it later
        "epochs": int(epochs),
        "metrics": metrics,
    }


DOC_MD = """
### Secure training

Started by every event on the `secure-data://packages/sanitized` Asset (published by
`secure_pretraining_sanitization`). The task `train`:

1. reads the package URI, id and manifest digest from the triggering Asset event
   (manual runs: the `package_uri` parameter);
2. verifies the Transit ed25519 signature with the **trainer** identity, and that the package was sanitized under
   a deployment policy on this trainer's allow-list. The trust anchors (Vault connection, signing key, allowed
   policy digests) come from the trainer worker's deployment configuration
   (`SECURE_DATA_TRAINER_VAULT_CONN_ID`, `SECURE_DATA_SIGNING_KEY`, `SECURE_DATA_TRAINER_POLICY_DIGESTS`), never
   from run parameters;
3. unwraps the data key (Transit decrypt), decrypts into a private scratch directory and checks every file's SHA-256;
4. trains yolo11n (from `yolo11n.yaml`, offline) and wipes the scratch directory, also on failure.

XCom: `package_id`, `package_uri`, `manifest_digest`, and the weights path + SHA-256.

This DAG writes no sanitization report: the report of the package it trained on is in the
**Sanitization report** tab of the `secure_pretraining_sanitization` run that produced it.
"""

with DAG(
    dag_id="secure_training",
    description="Verify, decrypt (private scratch) and train on a sanitized secure-data package",
    doc_md=DOC_MD,
    access_control=settings.access_control("SECURE_DATA_TRAINER_ROLE"),
    schedule=[PACKAGE_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["secure-data", "training"],
    params={
        "package_uri": Param(None, type=["null", "string"], title="Package URI (manual runs)",
                             description="file://, a path, or s3://bucket/prefix/<id>; Asset-triggered runs "
                                         "use the event."),
        "package_id": Param(None, type=["null", "string"], title="Expected package id (manual runs)"),
        "epochs": Param(1, type="integer", minimum=1, title="Epochs", description="Training epochs (at least 1)."),
        "imgsz": Param(64, type="integer", minimum=32, multipleOf=32, title="Image size (px)",
                       description="Training image size, a multiple of 32."),
        "batch": Param(4, type="integer", minimum=1, title="Batch size", description="Images per training batch."),
        "device": Param("cpu", type="string", pattern="^(cpu|cuda(:[0-9]+)?)$", title="Device",
                        description="cpu, cuda or cuda:N."),
    },
) as dag:
    PackageConsumerOperator(
        task_id="train",
        python_callable=train_yolo,
        package_uri="{{ params.package_uri }}",
        expected_package_id="{{ params.package_id }}",
        vault_conn_id=trainer_vault_conn_id(), signing_key=signing_key_name(), data_key=data_key_name(),
        allowed_policy_digests="deployment", queue=settings.train_queue(),
        op_kwargs={"epochs": "{{ params.epochs }}", "imgsz": "{{ params.imgsz }}",
                   "batch": "{{ params.batch }}", "device": "{{ params.device }}"},
    )
