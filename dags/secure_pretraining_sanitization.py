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
from secure_data.operators.handoff import PackageOperator
from secure_data.operators.integrity import IntegrityOperator
from secure_data.operators.policy import (
    PolicyAnonymizeMergeOperator,
    PolicyAnonymizeOperator,
    PolicyCheckOperator,
    PolicyPoisoningOperator,
)
from secure_data.operators.preflight import VaultPreflightOperator
from secure_data.operators.report import SanitizationReportOperator
from secure_data.policy import load_policy
from secure_data.policy.anchors import sanitizer_vault_conn_id

ACTIONS = ["fail", "warn", "quarantine"]
POLICY_DISPLAY = {"fail": "Fail the run", "warn": "Warn and keep the sample", "quarantine": "Quarantine the sample"}


def _policy(default: str, title: str, description: str) -> Param:
    return Param(default, type="string", enum=ACTIONS, values_display=POLICY_DISPLAY, title=title,
                 description=description, section="Checks and policies")


# The deployment policy (SECURE_DATA_POLICY_FILE, else the built-in one) bounds the trigger form: a value
# weaker than the policy is refused by the API at trigger time. The workers re-read their own policy and
# refuse it again at execute time (a form is a convenience, not the enforcement).
POLICY = load_policy()
_POLICY_NOTE = f" Deployment policy {POLICY.name} ({POLICY.digest[:19]}…) bounds this value: runs may only tighten it."


def _contains_all(names) -> dict:
    """JSON Schema: the array must contain every one of ``names`` (the policy's protected classes)."""
    return {"allOf": [{"contains": {"const": name}} for name in names]} if names else {}


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
| `report` | HTML report of the run: counts, quarantine and warnings, findings, anonymization figures, thumbnails |

**Where the report is:** open a run, then its **Sanitization report** tab (it shows "not written yet" and
refreshes itself while the run is going); or the `report` task's **Run report** link in its **Details** tab.
The report links to the run's Great Expectations validation pages.

Nothing is deleted: a sample that fails a check is copied to the run's quarantine folder with a reason,
and `accepted + quarantined = input` holds at every stage. XCom and Asset extras carry only paths,
digests and counts. Start a run with the **Trigger** button (top right) to get the parameter form;
models, their pins and the minimum thresholds come from the deployment policy, not from this form.
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
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=10), "retry_exponential_backoff": True,
                  "queue": settings.sanitize_queue()},
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
            description="manifest.jsonl of the last trusted run: added, removed and modified files are reported. "
                        "Requires its digest (below).",
            section="Source",
        ),
        "reference_digest": Param(
            None, type=["null", "string"], pattern="^sha256:[0-9a-f]{64}$", title="Reference manifest digest",
            description="sha256:<hex> of the reference manifest (the manifest_digest of that run's integrity "
                        "XCom); required with a reference manifest.", section="Source",
        ),
        "storage_secret": Param(
            None, type=["null", "string"], title="Storage credentials (Vault KV path)",
            description="KV v2 path (e.g. secure-data/datasets/street-scenes) holding the object-storage "
                        "credentials of the source. Read at run time, masked, never stored.",
            section="Source",
        ),
        # --- Anonymization ----------------------------------------------------------------------------------
        # No model parameters: the models and their SHA-256 pins come from the deployment policy only.
        "classes": Param(
            list(POLICY.classes), type="array", items={"type": "string", "minLength": 1}, minItems=1,
            **_contains_all(POLICY.classes),
            title="Classes to obfuscate", description="Detector class names whose boxes are made unrecognizable. "
                                                      "You may add classes, not remove the policy's." + _POLICY_NOTE,
            section="Anonymization",
        ),
        "label_classes": Param(
            list(POLICY.label_classes), type="array", items={"type": "string", "minLength": 1},
            **_contains_all(POLICY.label_classes), title="Protected label classes",
            description="Label class names whose labelled boxes are obfuscated too." + _POLICY_NOTE,
            section="Anonymization",
        ),
        "mode": Param(
            POLICY.modes[0], type="string", enum=list(POLICY.modes),
            values_display={"blur": "Gaussian blur scaled to the box (default)", "pixelate": "Pixelate",
                            "fill": "Solid fill"},
            title="Obfuscation mode",
            description="blur: sigma = 0.35 x box size, nothing finer than ~3x3 of the box survives "
                        "(see docs/anonymize.md for why this beats pixelation).",
            section="Anonymization",
        ),
        "shape": Param("rectangle", type="string", enum=["rectangle", "ellipse"], title="Obfuscation shape",
                       values_display={"rectangle": "Rectangle (the whole box)",
                                       "ellipse": "Ellipse inscribed in the box"},
                       description="Area obfuscated in each (padded) box.", section="Anonymization"),
        "box_padding": Param(max(0.15, POLICY.padding), type="number", minimum=POLICY.padding, maximum=1,
                             title="Box padding", description="Grow each box by this fraction of its size before "
                                                              "obfuscating." + _POLICY_NOTE, section="Anonymization"),
        "confidence": Param(POLICY.conf, type="number", minimum=0.01, maximum=POLICY.conf,
                            title="Detection confidence", description=f"Detection threshold, 0.01 to {POLICY.conf}: lower finds more."
                            + _POLICY_NOTE, section="Anonymization"),
        "verify_confidence": Param(POLICY.verify_conf, type="number", minimum=0.01, maximum=POLICY.verify_conf,
                                   title="Verification confidence",
                                   description=f"Threshold of the re-detection on the output, 0.01 to {POLICY.verify_conf}."
                                               + _POLICY_NOTE,
                                   section="Anonymization"),
        "max_passes": Param(POLICY.max_passes, type="integer", minimum=POLICY.max_passes,
                            maximum=max(8, POLICY.max_passes), title="Re-obfuscation passes",
                            description="How many times a residual detection is obfuscated again (over a growing "
                                        "area) before the image is quarantined." + _POLICY_NOTE,
                            section="Anonymization"),
        "min_face_px": Param(POLICY.min_face_px, type=["null", "integer"], minimum=1,
                             **({"maximum": POLICY.min_face_px} if POLICY.min_face_px else {}),
                             title="Smallest face to find (px)", description="Empty: the policy's value."
                             + _POLICY_NOTE, section="Anonymization"),
        "imgsz": Param(max(640, POLICY.imgsz), type="integer", minimum=POLICY.imgsz, maximum=4096, multipleOf=32,
                       title="Inference size (px)", description="Image size the detector runs at (a multiple of 32). Use the size "
                       "the policy's model was trained for (stock YOLO: 640); smaller misses small faces."
                       + _POLICY_NOTE,
                       section="Anonymization"),
        "device": Param("auto", type="string", pattern="^(auto|cpu|cuda(:[0-9]+)?)$", title="Device",
                        description="auto (the GPU when the worker has one, else the CPU), cpu, cuda or cuda:N.",
                        section="Anonymization"),
        "batch_size": Param(16, type="integer", minimum=1, maximum=512, title="Batch size",
                            description="Images per detector call, 1 to 512: larger is faster on a GPU and needs "
                                        "more GPU memory.", section="Anonymization"),
        "shard_size": Param(500, type="integer", minimum=1, title="Images per anonymization shard",
                            description="The anonymization stage fans out into one task per shard.",
                            section="Anonymization"),
        # --- Checks and policies ----------------------------------------------------------------------------
        "max_pixels": Param(50_000_000, type="integer", minimum=1, title="Decompression-bomb limit (pixels)",
                            description="An image declaring more pixels (width x height) than this is quarantined "
                                        "without being decoded.", section="Checks and policies"),
        "background_images": Param("warn", type="string", enum=["accept", "warn", "quarantine"],
                                   values_display={"accept": "Accept as background images",
                                                   "warn": "Warn and keep them", "quarantine": "Quarantine them"},
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
                                description="Also screen boxes in the feature space of the deployment policy's "
                                            "detector (a .pt trained on this domain; it is loaded only if its "
                                            "SHA-256 matches the policy's pin). Finds re-classed objects; costs a second pass over the "
                                            "images.", section="Checks and policies"),
        "backbone_policy": _policy("warn", "Backbone feature outliers", "What a feature-space outlier does."),
        "residual_policy": Param(POLICY.residual_policy, type="string",
                                 enum=["quarantine", "fail"][["quarantine", "fail"].index(POLICY.residual_policy):],
                                 values_display={"quarantine": "Quarantine the image (withhold it)",
                                                 "fail": "Fail the run"},
                                 title="Residual detections after obfuscation",
                                 description="An image still showing a protected class after re-obfuscation."
                                             + _POLICY_NOTE, section="Checks and policies"),
        "on_residual": Param(POLICY.on_residual, type="string",
                             enum=["reobfuscate", "quarantine"][["reobfuscate", "quarantine"].index(POLICY.on_residual):],
                             values_display={"reobfuscate": "Obfuscate again over a larger area",
                                             "quarantine": "Quarantine the image at once"},
                             title="First answer to a residual detection",
                             description="reobfuscate (then quarantine if still found) or quarantine at once."
                                         + _POLICY_NOTE, section="Checks and policies"),
    },
) as dag:
    # What the run asks of the anonymize stage; every task that acts on it re-checks it against its
    # worker's deployment policy (secure_data.operators.policy) and uses the policy's models only.
    policy_request = {
        "classes": "{{ params.classes }}",
        "label_classes": "{{ params.label_classes }}",
        "mode": "{{ params.mode }}",
        "shape": "{{ params.shape }}",
        "box_padding": "{{ params.box_padding }}",
        "confidence": "{{ params.confidence }}",
        "verify_confidence": "{{ params.verify_confidence }}",
        "max_passes": "{{ params.max_passes }}",
        "min_face_px": "{{ params.min_face_px }}",
        "imgsz": "{{ params.imgsz }}",
        "device": "{{ params.device }}",
        "batch_size": "{{ params.batch_size }}",
        "residual_policy": "{{ params.residual_policy }}",
        "on_residual": "{{ params.on_residual }}",
    }
    policy_check = PolicyCheckOperator(task_id="policy", policy_request=policy_request)

    preflight = VaultPreflightOperator(
        task_id="preflight", vault_conn_id=sanitizer_vault_conn_id(),
        secret_paths="{{ [params.storage_secret] if params.storage_secret else [] }}",  # noqa: S106 (a KV path)
    )

    integrity = IntegrityOperator(
        task_id="integrity",
        source="{{ params.source }}",
        reference_manifest="{{ params.reference_manifest }}",
        reference_digest="{{ params.reference_digest }}",
        storage_secret="{{ params.storage_secret }}",  # noqa: S106 (a KV path, not a secret)
        vault_conn_id=sanitizer_vault_conn_id(),
        config={
            "max_pixels": "{{ params.max_pixels }}",
            "background_images": "{{ params.background_images }}",
            "tamper_policy": "{{ params.tamper_policy }}",
            "gx_policy": "{{ params.gx_policy }}",
        },
    )

    poisoning = PolicyPoisoningOperator(
        task_id="poisoning",
        upstream=integrity.output,
        reference_manifest="{{ params.reference_manifest }}",
        reference_digest="{{ params.reference_digest }}",
        backbone_check="{{ params.backbone_check }}",
        config={
            "duplicates_policy": "{{ params.duplicates_policy }}",
            "leakage_policy": "{{ params.leakage_policy }}",
            "trigger_policy": "{{ params.trigger_policy }}",
            "outlier_policy": "{{ params.outlier_policy }}",
            "drift_policy": "{{ params.drift_policy }}",
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

    # GPU routing: on CeleryExecutor / KubernetesExecutor the anonymization shards go to the GPU workers'
    # queue and pool (docker/docker-compose.yaml sets SECURE_DATA_GPU_QUEUE=gpu); LocalExecutor ignores queues.
    anonymize = PolicyAnonymizeOperator.partial(
        task_id="anonymize", upstream=poisoning.output, policy_request=policy_request,
        queue=settings.gpu_queue(), pool=settings.gpu_pool(),
    ).expand_kwargs(shards)

    merged = PolicyAnonymizeMergeOperator(
        task_id="anonymize_merge", upstream=poisoning.output, shard_results=anonymize.output,
        policy_request=policy_request,
    )

    handoff = PackageOperator(
        task_id="handoff", upstream=merged.output, upstream_stages=[integrity.output, poisoning.output],
        vault_conn_id=sanitizer_vault_conn_id(), outlets=[PACKAGE_ASSET], policy_request=policy_request,
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

    policy_check >> preflight >> integrity
    handoff >> report
    dag.tasks >> watcher()
