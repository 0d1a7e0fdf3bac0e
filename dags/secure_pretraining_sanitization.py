"""secure_pretraining_sanitization: raw image dataset -> sanitized, encrypted, signed package.

Parse-time cost matters (the DAG processor re-parses this file): only light imports
here; every heavy library is imported inside the operators' ``execute``.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, TriggerRule, task

from secure_data import settings
from secure_data.assets import PACKAGE_ASSET
from secure_data.operators.anonymize import AnonymizeMergeOperator, AnonymizeOperator
from secure_data.operators.handoff import PackageOperator
from secure_data.operators.integrity import IntegrityOperator
from secure_data.operators.poisoning import PoisoningOperator
from secure_data.operators.preflight import VaultPreflightOperator
from secure_data.operators.report import SanitizationReportOperator

POLICY = ["fail", "warn", "quarantine"]
POLICY_DISPLAY = {"fail": "Fail the run", "warn": "Warn and keep the sample", "quarantine": "Quarantine the sample"}


def _policy(default: str, title: str, description: str) -> Param:
    return Param(default, type="string", enum=POLICY, values_display=POLICY_DISPLAY, title=title,
                 description=description, section="Checks and policies")


def _schedule() -> str | None:
    """``SECURE_DATA_SCHEDULE`` (default ``@daily``); ``none`` switches the schedule off (manual runs only)."""
    value = os.environ.get("SECURE_DATA_SCHEDULE", "@daily").strip()
    return None if value.lower() in ("", "none", "off") else value


DOC_MD = """
### Secure pre-training sanitization

Turns a raw YOLO-layout image dataset into a **sanitized, encrypted, signed package** and announces it
on the `secure-data` package Asset, which starts the training DAG.

| task | what it proves or does |
| --- | --- |
| `preflight` | Vault token valid, secret paths and Transit keys exist, the sanitizer can **not** decrypt |
| `integrity` | hash-verified manifest of every file, full decode, label sanity, tamper diff, Great Expectations gate |
| `poisoning` | duplicates / near-duplicates with conflicting labels, split leakage, drift, outliers, trigger patches |
| `anonymize` | YOLO detection + irreversible obfuscation of protected classes, re-detection, audit log (fanned out over shards) |
| `handoff` | per-file AES-256-GCM under a Vault Transit data key, manifest signed with a Transit ed25519 key |
| `report` | HTML report (button **Run report** on the task, or the run's **Sanitization report** tab) |

Nothing is deleted: a sample that fails a check is copied to the run's quarantine folder with a reason,
and `accepted + quarantined = input` holds at every stage. XCom and Asset extras carry only paths,
digests and counts. Trigger with **Trigger DAG** to get the parameter form.
"""

with DAG(
    dag_id="secure_pretraining_sanitization",
    description="Vault preflight -> integrity -> poisoning -> GPU anonymization -> encrypted, signed hand-off",
    doc_md=DOC_MD,
    access_control=settings.access_control("SECURE_DATA_SANITIZER_ROLE"),
    schedule=_schedule(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    render_template_as_native_obj=True,
    tags=["secure-data", "sanitization"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=10), "retry_exponential_backoff": True},
    params={
        # --- Source -----------------------------------------------------------------------------------------
        "source": Param(
            os.environ.get("SECURE_DATA_SOURCE", ""), type="string", title="Dataset source",
            description="YOLO-layout dataset: a local directory or an object-storage URI (s3://, gs://, file://). "
                        "Must contain data.yaml, images/<split>/ and labels/<split>/.",
            section="Source",
        ),
        "reference_manifest": Param(
            None, type=["null", "string"], title="Reference manifest (last trusted)",
            description="manifest.jsonl of the last trusted run: added, removed and modified files are reported.",
            section="Source",
        ),
        "storage_secret": Param(
            None, type=["null", "string"], title="Storage credentials (Vault KV path)",
            description="KV v2 path (e.g. secure-data/datasets/street-scenes) holding the object-storage "
                        "credentials of the source. Read at run time, masked, never stored.",
            section="Source",
        ),
        "vault_conn_id": Param(
            "vault_sanitizer", type="string", title="Vault connection (sanitizer identity)",
            description="Airflow connection of the sanitizer AppRole: reads dataset credentials, creates data keys, "
                        "signs; may not decrypt.", section="Source",
        ),
        # --- Anonymization ----------------------------------------------------------------------------------
        "model_path": Param(
            os.environ.get("SECURE_DATA_MODEL_PATH", ""), type="string", title="Detector model",
            description="Ultralytics detection model (.pt, .onnx or .engine).", section="Anonymization",
        ),
        "model_sha256": Param(
            os.environ.get("SECURE_DATA_MODEL_SHA256", "0" * 64), type="string", pattern="^[0-9a-f]{64}$",
            title="Pinned SHA-256 of the model", description="The model is loaded only if its SHA-256 matches "
            "(a .pt file is a pickle: never load an unpinned one).", section="Anonymization",
        ),
        "face_model_path": Param(
            os.environ.get("SECURE_DATA_FACE_MODEL_PATH", ""), type="string", title="Face model (CenterFace ONNX)",
            description="Optional independent face detector used for detection (class 'face') and verification. "
                        "Empty: not used.", section="Anonymization",
        ),
        "face_model_sha256": Param(
            os.environ.get("SECURE_DATA_FACE_MODEL_SHA256", ""), type="string", pattern="^([0-9a-f]{64})?$",
            title="Pinned SHA-256 of the face model", section="Anonymization",
        ),
        "classes": Param(
            ["face", "plate"], type="array", items={"type": "string", "minLength": 1}, minItems=1,
            title="Classes to obfuscate", description="Detector class names whose boxes are made unrecognizable.",
            section="Anonymization",
        ),
        "mode": Param(
            "blur", type="string", enum=["blur", "pixelate", "fill"],
            values_display={"blur": "Gaussian blur scaled to the box (default)", "pixelate": "Pixelate",
                            "fill": "Solid fill"},
            title="Obfuscation mode",
            description="blur: sigma = 0.35 x box size, nothing finer than ~3x3 of the box survives "
                        "(see docs/anonymize.md for why this beats pixelation).",
            section="Anonymization",
        ),
        "shape": Param("rectangle", type="string", enum=["rectangle", "ellipse"], title="Obfuscation shape",
                       section="Anonymization"),
        "box_padding": Param(0.15, type="number", minimum=0, maximum=1, title="Box padding",
                             description="Grow each box by this fraction of its size before obfuscating.",
                             section="Anonymization"),
        "confidence": Param(0.25, type="number", minimum=0.01, maximum=1, title="Detection confidence",
                            section="Anonymization"),
        "verify_confidence": Param(0.10, type="number", minimum=0.01, maximum=1, title="Verification confidence",
                                   description="Lower threshold for the re-detection on the output.",
                                   section="Anonymization"),
        "max_passes": Param(2, type="integer", minimum=0, maximum=8, title="Re-obfuscation passes",
                            description="How many times a residual detection is obfuscated again (over a growing "
                                        "area) before the image is quarantined.", section="Anonymization"),
        "imgsz": Param(640, type="integer", minimum=32, maximum=4096, multipleOf=32, title="Inference size (px)",
                       section="Anonymization"),
        "device": Param("auto", type="string", pattern="^(auto|cpu|cuda(:[0-9]+)?)$", title="Device",
                        description="auto, cpu, cuda or cuda:N", section="Anonymization"),
        "batch_size": Param(16, type="integer", minimum=1, maximum=512, title="Batch size", section="Anonymization"),
        "shard_size": Param(500, type="integer", minimum=1, title="Images per anonymization shard",
                            description="The anonymization stage fans out into one task per shard.",
                            section="Anonymization"),
        # --- Checks and policies ----------------------------------------------------------------------------
        "max_pixels": Param(50_000_000, type="integer", minimum=1, title="Decompression-bomb limit (pixels)",
                            section="Checks and policies"),
        "background_images": Param("warn", type="string", enum=["accept", "warn", "quarantine"],
                                   title="Images without a label file",
                                   description="accept them as background images, warn, or quarantine them.",
                                   section="Checks and policies"),
        "tamper_policy": _policy("quarantine", "Tamper diff (vs reference manifest)",
                                 "What to do with added or modified files."),
        "gx_policy": _policy("quarantine", "Great Expectations suite",
                             "What a failed per-image expectation (duplicate hash, format, dimensions) does."),
        "duplicates_policy": _policy("quarantine", "Duplicates with conflicting labels", "Label-flip signature."),
        "leakage_policy": _policy("quarantine", "Train/val/test leakage", "Near-duplicates across splits."),
        "trigger_policy": _policy("quarantine", "Trigger patches", "BadNets-style patches correlated with labels."),
        "outlier_policy": _policy("warn", "Box statistics outliers", "Per-class robust outliers."),
        "drift_policy": _policy("warn", "Drift vs reference", "Class balance / box statistics drift."),
        "backbone_check": Param(False, type="boolean", title="Backbone feature check (spectral signatures)",
                                description="Also screen boxes in the feature space of the detector model above "
                                            "(a .pt trained on this domain; it is loaded only if its SHA-256 "
                                            "matches). Finds re-classed objects; costs a second pass over the "
                                            "images.", section="Checks and policies"),
        "backbone_policy": _policy("warn", "Backbone feature outliers", "What a feature-space outlier does."),
        "residual_policy": Param("quarantine", type="string", enum=["quarantine", "fail"],
                                 title="Residual detections after obfuscation",
                                 description="An image still showing a protected class after re-obfuscation.",
                                 section="Checks and policies"),
    },
) as dag:
    preflight = VaultPreflightOperator(
        task_id="preflight", vault_conn_id="{{ params.vault_conn_id }}",
        secret_paths="{{ [params.storage_secret] if params.storage_secret else [] }}",  # noqa: S106 (a KV path)
    )

    integrity = IntegrityOperator(
        task_id="integrity",
        source="{{ params.source }}",
        reference_manifest="{{ params.reference_manifest }}",
        storage_secret="{{ params.storage_secret }}",  # noqa: S106 (a KV path, not a secret)
        vault_conn_id="{{ params.vault_conn_id }}",
        config={
            "max_pixels": "{{ params.max_pixels }}",
            "background_images": "{{ params.background_images }}",
            "tamper_policy": "{{ params.tamper_policy }}",
            "gx_policy": "{{ params.gx_policy }}",
        },
    )

    poisoning = PoisoningOperator(
        task_id="poisoning",
        upstream=integrity.output,
        reference_manifest="{{ params.reference_manifest }}",
        config={
            "duplicates_policy": "{{ params.duplicates_policy }}",
            "leakage_policy": "{{ params.leakage_policy }}",
            "trigger_policy": "{{ params.trigger_policy }}",
            "outlier_policy": "{{ params.outlier_policy }}",
            "drift_policy": "{{ params.drift_policy }}",
            "backbone_model": "{{ params.model_path if params.backbone_check else None }}",
            "backbone_model_sha256": "{{ params.model_sha256 if params.backbone_check else None }}",
            "backbone_device": "{{ params.device }}",
            "backbone_policy": "{{ params.backbone_policy }}",
        },
    )

    @task
    def plan_shards(upstream: dict, shard_size: int) -> list[dict[str, int]]:
        """One mapped anonymization task per ``shard_size`` accepted images (at least one)."""
        images = int(upstream["counts"].get("images_accepted", 0))
        count = max(1, -(-images // max(1, int(shard_size))))
        return [{"shard_index": i, "shard_count": count} for i in range(count)]

    shards = plan_shards(poisoning.output, "{{ params.shard_size }}")

    anonymize_config = {
        "model_path": "{{ params.model_path }}",
        "model_sha256": "{{ params.model_sha256 }}",
        "face_model_path": "{{ params.face_model_path }}",
        "face_model_sha256": "{{ params.face_model_sha256 }}",
        "classes": "{{ params.classes }}",
        "mode": "{{ params.mode }}",
        "shape": "{{ params.shape }}",
        "box_padding": "{{ params.box_padding }}",
        "confidence": "{{ params.confidence }}",
        "verify_confidence": "{{ params.verify_confidence }}",
        "max_passes": "{{ params.max_passes }}",
        "imgsz": "{{ params.imgsz }}",
        "device": "{{ params.device }}",
        "batch_size": "{{ params.batch_size }}",
        "residual_policy": "{{ params.residual_policy }}",
    }
    # GPU routing: on CeleryExecutor / KubernetesExecutor the anonymization shards go to the GPU workers'
    # queue and pool (docker/docker-compose.yaml sets SECURE_DATA_GPU_QUEUE=gpu); LocalExecutor ignores queues.
    anonymize = AnonymizeOperator.partial(
        task_id="anonymize", upstream=poisoning.output, config=anonymize_config,
        queue=settings.gpu_queue(), pool=settings.gpu_pool(),
    ).expand_kwargs(shards)

    merged = AnonymizeMergeOperator(
        task_id="anonymize_merge", upstream=poisoning.output, shard_results=anonymize.output,
        config=anonymize_config,
    )

    handoff = PackageOperator(
        task_id="handoff", upstream=merged.output, upstream_stages=[integrity.output, poisoning.output],
        vault_conn_id="{{ params.vault_conn_id }}", outlets=[PACKAGE_ASSET],
    )

    report = SanitizationReportOperator(
        task_id="report",
        stage_task_ids={"integrity": "integrity", "poisoning": "poisoning", "anonymize": "anonymize_merge",
                        "handoff": "handoff"},
    )

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def watcher() -> None:
        """Fail the run when any stage failed: ``report`` runs ``all_done`` and would otherwise be the
        only leaf, so a run whose hand-off failed (e.g. disk full) would end "success"."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a stage of this run failed; see the failed task and the run report")

    preflight >> integrity
    handoff >> report
    dag.tasks >> watcher()
