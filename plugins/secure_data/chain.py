"""``sanitize_dataset``: the whole sanitization chain (policy check to report) from one config object.

For DAG authors who want the chain of ``dags/secure_pretraining_sanitization.py`` in their own DAG without
copying its wiring::

    with DAG("sanitize_street_scenes", schedule="@daily", start_date=..., render_template_as_native_obj=True):
        sanitize_dataset(SanitizeConfig(name="street_scenes", source="{{ params.source }}"))

The config is checked when the DAG file is parsed (:class:`SanitizeConfigError`, an import error on the
DAG): unknown integrity / poisoning keys, policy actions that do not exist, and an anonymization request
weaker than the deployment policy the DAG processor reads. Jinja values (``"{{ params.x }}"``) are checked
at run time instead, by the same code on the worker. Models, their pins and the minimum thresholds are the
deployment policy's (``SECURE_DATA_POLICY_FILE``), never the config's; the anonymization request may only
tighten it.

Each dataset publishes on its own Asset, ``package_asset(name)`` (``secure-data://packages/<name>``), so a
training DAG schedules on the datasets it wants (``secure_data.operators.consumer.package_consumer``).

Uses the public operators only. The DAG processor imports this module: nothing heavy at module level (the
config checks import only the light config and policy modules).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup, TriggerRule, task

from secure_data import settings
from secure_data.assets import package_asset
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
from secure_data.policy.anchors import sanitizer_vault_conn_id

if TYPE_CHECKING:
    from airflow.sdk import Asset

__all__ = ["SanitizeConfig", "SanitizeConfigError", "sanitize_dataset"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class SanitizeConfigError(ValueError):
    """A :class:`SanitizeConfig` that cannot run; raised when the DAG file is parsed."""


def _templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@dataclass(frozen=True)
class SanitizeConfig:
    """What one dataset's sanitization run needs. Validated on creation (DAG parse time).

    :param name: dataset name (``[a-z0-9][a-z0-9_-]*``): the package name (prefix of package ids) and the
        Asset ``secure-data://packages/<name>`` the hand-off announces on.
    :param source: YOLO-layout dataset: a local directory or an object-storage URI (``s3://``, ``gs://``);
        templated (e.g. ``"{{ params.source }}"``).
    :param storage_secret: KV v2 path (read with ``vault_conn_id``) of the source's object-storage credentials
        (``access_key_id``, ``secret_access_key``, optional ``endpoint_url``); preflight checks it exists.
    :param source_conn_id: instead of ``storage_secret``: an Airflow connection for an ``ObjectStoragePath``.
    :param reference_manifest: manifest.jsonl of the last trusted run (tamper diff, drift), with
        ``reference_digest`` (``sha256:<hex>``).
    :param integrity: :class:`secure_data.integrity.config.IntegrityConfig` keys (``max_pixels``,
        ``background_images``, ``tamper_policy``, ``gx_policy``...).
    :param poisoning: :class:`secure_data.poisoning.config.PoisoningConfig` keys and ``<check>_policy`` /
        group policy keys (``duplicates_policy``, ``trigger_policy``, ``drift_policy``...).
    :param anonymize: the run's anonymization request (``classes``, ``mode``, ``confidence``, ``max_passes``,
        ``device``, ``batch_size``...), checked against the deployment policy: it may only tighten it.
    :param backbone_check: also screen boxes in the deployment policy's detector's feature space.
    :param shard_size: images per anonymization task (dynamic task mapping over shards).
    :param vault_conn_id: the sanitizer identity's Vault connection (default
        ``SECURE_DATA_SANITIZER_VAULT_CONN_ID``, else ``vault_sanitizer``).
    :param packages_root: where packages are published (default ``SECURE_DATA_PACKAGE_ROOT``).
    :param package_storage_secret: KV v2 path of the credentials for an object-storage ``packages_root``.
    :param output_root: root of run-scoped folders (default ``SECURE_DATA_OUTPUT_ROOT``).
    :param asset: the Asset to announce packages on (default ``package_asset(name)``).
    :param queue: executor queue of the sanitizer-identity tasks (default ``SECURE_DATA_SANITIZE_QUEUE``);
        ``gpu_queue`` / ``gpu_pool``: the anonymization shards' (default ``SECURE_DATA_GPU_QUEUE`` / ``_POOL``).
    """

    source: str
    name: str = "sanitized"
    storage_secret: str | None = None
    source_conn_id: str | None = None
    reference_manifest: str | None = None
    reference_digest: str | None = None
    integrity: Mapping[str, Any] = field(default_factory=dict)
    poisoning: Mapping[str, Any] = field(default_factory=dict)
    anonymize: Mapping[str, Any] = field(default_factory=dict)
    backbone_check: bool | str = False
    shard_size: int | str = 500
    vault_conn_id: str | None = None
    packages_root: str | None = None
    package_storage_secret: str | None = None
    output_root: str | None = None
    asset: Asset | None = None
    queue: str | None = None
    gpu_queue: str | None = None
    gpu_pool: str | None = None

    def __post_init__(self) -> None:
        problems = [*self._basic_problems(), *_integrity_problems(self.integrity),
                    *_poisoning_problems(self.poisoning), *_anonymize_problems(self.anonymize)]
        if problems:
            raise SanitizeConfigError(f"sanitize_dataset({self.name!r}): " + "; ".join(problems))

    def _basic_problems(self) -> list[str]:
        problems = []
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            problems.append(f"name {self.name!r} must match {NAME_RE.pattern} (it names the package and its Asset)")
        if not isinstance(self.source, str) or not self.source.strip():
            problems.append("source is required (a directory, an s3:// URI or a template such as "
                            "'{{ params.source }}')")
        for name in ("storage_secret", "package_storage_secret"):
            value = getattr(self, name)
            if _templated(value) and not _SINGLE_EXPRESSION.match(value):
                problems.append(f"{name} {value!r}: a templated KV path must be one {{{{ expression }}}}")
        if self.storage_secret and self.source_conn_id:
            problems.append("give storage_secret or source_conn_id, not both")
        if bool(self.reference_manifest) != bool(self.reference_digest):
            problems.append("reference_manifest and reference_digest go together")
        digest = self.reference_digest
        if digest and not _templated(digest) and not re.fullmatch(r"sha256:[0-9a-f]{64}", str(digest)):
            problems.append(f"reference_digest {digest!r} is not sha256:<64 hex>")
        if not _templated(self.shard_size):
            try:
                if int(self.shard_size) < 1:
                    raise ValueError
            except (TypeError, ValueError):
                problems.append(f"shard_size {self.shard_size!r} must be an integer >= 1")
        for name in ("integrity", "poisoning", "anonymize"):
            if not isinstance(getattr(self, name), Mapping):
                problems.append(f"{name} must be a mapping, got {type(getattr(self, name)).__name__}")
        return problems

    @property
    def package_asset(self) -> Asset:
        return self.asset if self.asset is not None else package_asset(self.name)

    def replace(self, **changes: Any) -> SanitizeConfig:
        """A copy with ``changes`` (validated again)."""
        return SanitizeConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def _literal(mapping: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(mapping).items() if not _templated(v)} if isinstance(mapping, Mapping) else {}


def _integrity_problems(config: Mapping[str, Any]) -> list[str]:
    from secure_data.integrity.config import ALIASES, IntegrityConfig

    if not isinstance(config, Mapping):
        return []
    known = {f.name for f in fields(IntegrityConfig)} | set(ALIASES)
    unknown = sorted(set(config) - known)
    if unknown:
        return [f"unknown integrity keys {unknown} (known: {sorted(known)})"]
    try:
        IntegrityConfig.from_dict(_literal(config))
    except (TypeError, ValueError) as exc:
        return [f"integrity: {exc}"]
    return []


def _poisoning_problems(config: Mapping[str, Any]) -> list[str]:
    from secure_data.poisoning.config import CHECKS, POLICY_GROUPS, PoisoningConfig

    if not isinstance(config, Mapping):
        return []
    problems = []
    chosen = sorted({"backbone_model", "backbone_model_sha256"} & set(config))
    if chosen:
        problems.append(f"poisoning {chosen}: the backbone model comes from the deployment policy only "
                        "(use backbone_check=True)")
    known = {f.name for f in fields(PoisoningConfig)} | set(POLICY_GROUPS) | {f"{c}_policy" for c in CHECKS}
    unknown = sorted(set(config) - known)
    if unknown:
        problems.append(f"unknown poisoning keys {unknown}")
    try:
        PoisoningConfig.from_dict({k: v for k, v in _literal(config).items() if k in known})
    except (TypeError, ValueError) as exc:
        problems.append(f"poisoning: {exc}")
    return problems


def _anonymize_problems(request: Mapping[str, Any]) -> list[str]:
    """The request against the deployment policy this process reads (the workers check again)."""
    from secure_data.policy import PolicyError, PolicyViolation, effective_anonymize_options, load_policy

    if not isinstance(request, Mapping):
        return []
    try:
        effective_anonymize_options(load_policy(), _literal(request))
    except (PolicyError, PolicyViolation) as exc:
        return [f"anonymize: {exc}"]
    return []


_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)+)\}\}\s*$", re.S)


def _secret_paths(*paths: str | None) -> list[str] | str:
    """The KV paths preflight checks: the given ones, or, when one is templated, a template that renders
    (natively) to the list of those that are set (an unset ``{{ params.storage_secret }}`` is no path)."""
    if not any(_templated(p) for p in paths):
        return [p for p in paths if p]
    exprs = [(_SINGLE_EXPRESSION.match(p)["expr"].strip() if _templated(p) else repr(p)) for p in paths if p]
    return "{{ [" + ", ".join(f"({e})" for e in exprs) + "] | select | list }}"


@task(task_id="plan_shards")
def _plan_shards(upstream: dict, shard_size: int) -> list[dict[str, int]]:
    """One mapped anonymization task per ``shard_size`` accepted images (at least one)."""
    images = int(upstream["counts"].get("images_accepted", 0))
    count = max(1, -(-images // max(1, int(shard_size))))
    return [{"shard_index": i, "shard_count": count} for i in range(count)]


@task(task_id="fail_if_a_stage_failed", trigger_rule=TriggerRule.ONE_FAILED, retries=0)
def _watcher() -> None:
    """Fail the run when any stage failed: ``report`` runs ``all_done`` and would otherwise be the only
    leaf, so a run whose hand-off failed would end "success"."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException("a stage of this run failed; see the failed task and the run report")


def sanitize_dataset(config: SanitizeConfig | Mapping[str, Any], *, group_id: str = "sanitize") -> TaskGroup:
    """Add the whole chain for one dataset to the current DAG, inside a TaskGroup ``group_id``.

    policy -> preflight -> integrity -> poisoning -> plan_shards -> anonymize (mapped) -> anonymize_merge ->
    handoff (announces on ``config.package_asset``) -> report, plus a watcher that fails the run when a stage
    failed (the report runs in every case). ``config``: a :class:`SanitizeConfig` or its keyword arguments.
    Use ``render_template_as_native_obj=True`` on the DAG when values are templated.
    """
    cfg = config if isinstance(config, SanitizeConfig) else SanitizeConfig(**dict(config))
    conn_id = cfg.vault_conn_id or sanitizer_vault_conn_id()
    request = dict(cfg.anonymize)
    queue = cfg.queue or settings.sanitize_queue()
    with TaskGroup(group_id=group_id, tooltip=f"secure-data sanitization of {cfg.name}") as group:
        policy = PolicyCheckOperator(task_id="policy", policy_request=request, queue=queue)
        preflight = VaultPreflightOperator(
            task_id="preflight", vault_conn_id=conn_id, queue=queue,
            secret_paths=_secret_paths(cfg.storage_secret, cfg.package_storage_secret))
        integrity = IntegrityOperator(
            task_id="integrity", source=cfg.source, reference_manifest=cfg.reference_manifest,
            reference_digest=cfg.reference_digest, storage_secret=cfg.storage_secret,
            source_conn_id=cfg.source_conn_id, vault_conn_id=conn_id, output_root=cfg.output_root,
            config=dict(cfg.integrity), queue=queue)
        poisoning = PolicyPoisoningOperator(
            task_id="poisoning", upstream=integrity.output, reference_manifest=cfg.reference_manifest,
            reference_digest=cfg.reference_digest, backbone_check=cfg.backbone_check, output_root=cfg.output_root,
            config=dict(cfg.poisoning), queue=queue)
        shards = _plan_shards.override(queue=queue)(poisoning.output, cfg.shard_size)
        anonymize = PolicyAnonymizeOperator.partial(
            task_id="anonymize", upstream=poisoning.output, policy_request=request, output_root=cfg.output_root,
            queue=cfg.gpu_queue or settings.gpu_queue(), pool=cfg.gpu_pool or settings.gpu_pool(),
        ).expand_kwargs(shards)
        merged = PolicyAnonymizeMergeOperator(
            task_id="anonymize_merge", upstream=poisoning.output, shard_results=anonymize.output,
            policy_request=request, output_root=cfg.output_root, queue=queue)
        handoff = PackageOperator(
            task_id="handoff", upstream=merged.output, upstream_stages=[integrity.output, poisoning.output],
            vault_conn_id=conn_id, packages_root=cfg.packages_root, storage_secret=cfg.package_storage_secret,
            output_root=cfg.output_root, package_name=cfg.name, outlets=[cfg.package_asset],
            policy_request=request, queue=queue)
        report = SanitizationReportOperator(
            task_id="report", output_root=cfg.output_root, queue=queue,
            stage_task_ids={"integrity": integrity.task_id, "poisoning": poisoning.task_id,
                            "anonymize": merged.task_id, "handoff": handoff.task_id})
        policy >> preflight >> integrity
        handoff >> report
        [policy, preflight, integrity, poisoning, shards.operator, anonymize, merged, handoff,
         report] >> _watcher.override(queue=queue)()
    return group
