"""Hand-off operators: publish an encrypted, signed package (sanitizer side) and consume one (trainer side).

Both are thin shells over ``secure_data.handoff``; XCom and Asset extras carry only
non-secret facts (URIs, ids, digests, counts, key names and versions).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from secure_data.assets import EVENT_KEYS, PACKAGE_ASSET, package_asset
from secure_data.lineage.mixin import OpenLineageMixin
from secure_data.operators.base import StageOperator
from secure_data.policy.anchors import sanitizer_vault_conn_id, trainer_vault_conn_id

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

    from secure_data.dataset.stage import RunLayout, StageResult

DEFAULT_DATA_KEY = "secure-data-datakey"
DEFAULT_SIGNING_KEY = "secure-data-signing"


class PackageOperator(StageOperator):
    """Encrypt and sign the accepted files of the anonymization stage into a package; announce it.

    :param upstream: the anonymization stage's ``StageResult`` XCom (templated; pass ``merged.output``).
    :param upstream_stages: earlier stages' ``StageResult`` XComs (integrity, poisoning): their manifest
        digests are recorded in the signed manifest.
    :param vault_conn_id: the sanitizer identity's Vault connection (creates data keys, signs).
    :param packages_root: where packages are published: a local directory or an object-storage URI
        such as ``s3://bucket/packages`` (default ``SECURE_DATA_PACKAGE_ROOT``, else ``<output root>/packages``).
    :param storage_secret: KV v2 path (read with ``vault_conn_id``) holding the object-storage
        credentials for ``packages_root`` (``access_key_id``, ``secret_access_key``, ``endpoint_url``...).
    :param output_root: root of run-scoped folders (default ``SECURE_DATA_OUTPUT_ROOT``).
    :param package_name: dataset name; prefix of the package id.
    :param data_key: Transit key that wraps the data key. :param signing_key: Transit ed25519 key.
    :param chunk_size: plaintext bytes per AEAD segment.
    :param attestation_key: Transit ECDSA key that signs ``model.sig`` (OpenSSF model_signing) and the run's
        provenance statement; None: neither is written.
    :param policy_request: the run's anonymize request (DAG params; templated). Given (even ``{}``), the
        effective deployment policy is re-derived on this worker (``secure_data.operators.policy``) and
        signed into the package: its digests in the manifest's ``upstream`` (``policy``,
        ``policy.effective``) and the document as the file ``secure-data-policy.json``.

    Emits one Asset event on every ``Asset`` in ``outlets`` (default ``[package_asset(package_name)]``,
    ``secure-data://packages/<package_name>``: one Asset per dataset; a templated ``package_name`` needs
    explicit ``outlets``) with
    ``extra`` = package_uri, package_id, name, manifest_digest, content_digest, counts, key_name,
    key_version, and with an attestation key provenance_uri + provenance_digest (the run's signed
    ``provenance.intoto.jsonl``, docs/provenance.md). Returns a ``StageResult`` (stage ``handoff``) whose
    ``extra`` holds the same facts.
    The package id is derived from (dag id, run id, input digest), so a retried task reuses a package
    its previous try already published instead of making a second one.
    """

    template_fields: Sequence[str] = (*StageOperator.template_fields, "upstream", "upstream_stages",
                                      "vault_conn_id", "packages_root", "storage_secret", "package_name",
                                      "data_key", "signing_key", "policy_request")
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        upstream: Any,
        upstream_stages: Any = (),
        vault_conn_id: str | None = None,
        packages_root: str | None = None,
        storage_secret: str | None = None,
        output_root: str | None = None,
        package_name: str = "sanitized",
        data_key: str = DEFAULT_DATA_KEY,
        signing_key: str = DEFAULT_SIGNING_KEY,
        attestation_key: str | None = "secure-data-attestation",
        chunk_size: int | None = None,
        policy_request: Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs:
            # One Asset per dataset by default: a copied DAG publishing another dataset must not trigger
            # the training DAGs of this one. The Asset is fixed when the DAG is parsed, so a templated
            # name cannot choose it.
            if "{{" in str(package_name) or "{%" in str(package_name):
                raise ValueError(
                    f"package_name {package_name!r} is templated, and the Asset a package is announced on is "
                    "fixed at DAG-parse time: pass outlets=[package_asset('<dataset name>')] explicitly")
            kwargs["outlets"] = [package_asset(package_name)]
        super().__init__(output_root=output_root, **kwargs)
        self.upstream = upstream
        self.upstream_stages = upstream_stages
        self.vault_conn_id = vault_conn_id or sanitizer_vault_conn_id()  # the deployment's sanitizer identity
        self.packages_root = packages_root
        self.storage_secret = storage_secret
        self.package_name = package_name
        self.data_key = data_key
        self.signing_key = signing_key
        self.chunk_size = chunk_size
        self.attestation_key = attestation_key
        self.policy_request = policy_request

    def run_stage(self, context: Context, layout: RunLayout) -> StageResult:
        from secure_data.dataset.atomic import atomic_write_text
        from secure_data.dataset.stage import HandoffFigures, StageResult
        from secure_data.handoff import remote
        from secure_data.handoff.package import MANIFEST_FILE, package_path
        from secure_data.handoff.provenance import provenance_for_run

        stage = self.upstream_result(self.upstream)
        lineage = [self.upstream_result(v, "upstream_stages") for v in (self.upstream_stages or ())]
        info, attestation = self._publish(context, layout, stage, lineage)
        dag_run = context.get("dag_run")
        provenance = provenance_for_run(  # <run>/provenance.intoto.jsonl, signed; {} without attestation key
            layout.root, package=info, stages=[*lineage, stage], signer=attestation, dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            started_on=dag_run.start_date.isoformat() if getattr(dag_run, "start_date", None) else None)
        self._announce(context, {**info.to_dict(), **provenance})
        # A pointer in the run folder (for the report and for people): non-secret facts only.
        atomic_write_text(layout.stage("handoff") / "package.json", json.dumps(info.to_dict(), indent=2) + "\n")
        root = info.uri.rstrip("/") if remote.is_remote(info.uri) else str(package_path(info.uri))
        return StageResult(stage="handoff", manifest_path=f"{root}/{MANIFEST_FILE}",
                           manifest_digest=info.manifest_digest, counts=dict(info.counts), data_root=root,
                           figures=HandoffFigures(**info.to_dict(), **provenance))

    def _publish(self, context: Context, layout: RunLayout, stage: StageResult,
                 lineage: list[StageResult]) -> tuple[Any, Any]:
        """Build, sign and publish the package (a retried try finds its own); ``(PackageInfo, attestation signer)``."""
        from secure_data import settings
        from secure_data.handoff import stream
        from secure_data.handoff.attest import transit_signer
        from secure_data.handoff.from_stage import derived_package_id, package_stage
        from secure_data.operators.storage import optional, storage_options_from_vault
        from secure_data.vault.keyservice import VaultKeyService

        storage_options = storage_options_from_vault(
            self.vault_conn_id, optional(self.storage_secret) or settings.package_storage_secret(), self.log)
        key_service = VaultKeyService.from_conn_id(self.vault_conn_id, data_key=self.data_key,
                                                   signing_key=self.signing_key)
        policy = None
        if self.policy_request is not None:
            from secure_data.operators.policy import package_policy

            policy = package_policy(self.policy_request)
        attestation = transit_signer(key_service, self.attestation_key)  # model.sig (OpenSSF model_signing)
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        info = package_stage(
            stage, optional(self.packages_root) or settings.package_root(), key_service, name=self.package_name,
            package_id=derived_package_id(self.package_name, dag_id, run_id, stage.manifest_digest),
            lineage=lineage, chunk_size=self.chunk_size or stream.DEFAULT_CHUNK_SIZE, attestation_signer=attestation,
            storage_options=storage_options, staging_dir=layout.stage("handoff"), policy=policy,
        )
        self.log.info("Published package %s (%d files, manifest %s, data key %s v%d) at %s",
                      info.package_id, info.counts["files"], info.manifest_digest, info.key_name,
                      info.key_version, info.uri)
        return info, attestation

    def _announce(self, context: Context, facts: Mapping[str, Any]) -> None:
        """One Asset event per outlet Asset: non-secret facts and a link to the run's report."""
        from airflow.sdk import Asset

        event = {k: v for k, v in facts.items() if k in EVENT_KEYS}
        # A link a person can open from the Asset event in the UI (the file:// package URI is for machines):
        # the run's report on the Airflow origin, absolute when [api] base_url is configured.
        event["report_url"] = browsable_report_url(context["dag"].dag_id, context["run_id"])
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = dict(event)

    def describe(self, result: StageResult) -> None:
        self.log.info("handoff: package %s, %s files; manifest %s (%s)", result.figures.package_id,
                      result.counts.files, result.manifest_path, result.manifest_digest)


@dataclass(frozen=True)
class PackageRef:
    """Where to find a package and what to insist on finding there (from an Asset event or by hand)."""

    uri: str
    package_id: str | None = None
    manifest_digest: str | None = None
    source: str = "argument"


def browsable_report_url(dag_id: str, run_id: str) -> str:
    from airflow.configuration import conf

    from secure_data.settings import report_url

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}{report_url(dag_id, run_id)}"


def resolve_package_ref(context: Context, asset: Asset = PACKAGE_ASSET, package_uri: str | None = None,
                        expected_package_id: str | None = None) -> PackageRef:
    """The package this run should open.

    1. The newest event on ``asset`` among the run's ``triggering_asset_events`` (an Asset-scheduled run):
       its ``package_uri``, and the ``package_id`` and ``manifest_digest`` the package must then have.
    2. Otherwise ``package_uri`` (a manual run: ``dag_run.conf`` / params).
    """
    events = _triggering_events(context, asset)
    if events:
        newest = max(events, key=lambda e: e.timestamp)
        extra = dict(newest.extra or {})
        uri = extra.get("package_uri")
        if not uri:
            raise ValueError(f"the triggering event on {asset.uri} has no package_uri in its extra")
        if len(events) > 1:
            import logging

            logging.getLogger(__name__).warning(
                "%d package events triggered this run; using the newest (%s)", len(events), extra.get("package_id"))
        return PackageRef(uri=str(uri), package_id=extra.get("package_id"),
                          manifest_digest=extra.get("manifest_digest"), source=f"asset event on {asset.uri}")
    if package_uri and str(package_uri) != "None":
        return PackageRef(uri=str(package_uri), package_id=expected_package_id or None)
    raise ValueError(f"no package to open: this run was not triggered by an event on {asset.uri} "
                     "and no package_uri was given")


def _triggering_events(context: Context, asset: Asset) -> list[Any]:
    accessor = context.get("triggering_asset_events")
    if not accessor:
        return []
    try:
        return list(accessor[asset])
    except KeyError:
        return []


class PackageConsumerOperator(OpenLineageMixin, BaseOperator):
    """Verify, decrypt into private scratch and hand the dataset to ``python_callable``; wipe afterwards.

    :param python_callable: ``f(package: OpenedPackage, **op_kwargs)``; ``package.path`` is the dataset
        root (YOLO layout), ``package.data_yaml`` a training config pointing at it. Its return value
        goes to XCom under ``result``: return only non-secret values.
    :param package_uri: for manual runs (templated, e.g. ``{{ params.package_uri }}``); an Asset-triggered
        run uses the triggering event instead (see ``resolve_package_ref``).
    :param expected_package_id: with ``package_uri``: the id the package must have.
    :param asset: the Asset whose events name packages (default ``PACKAGE_ASSET``).
    :param vault_conn_id: the trainer identity's Vault connection (unwraps, verifies; default the deployment's,
        ``SECURE_DATA_TRAINER_VAULT_CONN_ID`` or ``vault_trainer``).
    :param scratch_parent: where the private scratch directory goes (default /dev/shm, else the temp dir).
    :param storage_secret: KV v2 path (read with ``vault_conn_id``) holding the object-storage credentials
        for packages on ``s3://`` and the like; not needed for local packages.
    :param allowed_policy_digests: deployment policy digests the package must have been sanitized under
        (checked on the signed manifest before the key is unwrapped); ``"deployment"``: this worker's
        ``SECURE_DATA_TRAINER_POLICY_DIGESTS`` (else its own policy's digest); None: not checked.

    Returns ``{"package_id", "package_uri", "manifest_digest", "result"}``.
    """

    template_fields: Sequence[str] = ("package_uri", "expected_package_id", "vault_conn_id", "op_kwargs",
                                      "scratch_parent", "storage_secret", "data_key", "signing_key")
    ui_color = "#e8eaf6"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        package_uri: str | None = None,
        expected_package_id: str | None = None,
        asset: Asset = PACKAGE_ASSET,
        vault_conn_id: str | None = None,
        data_key: str = DEFAULT_DATA_KEY,
        signing_key: str = DEFAULT_SIGNING_KEY,
        op_kwargs: Mapping[str, Any] | None = None,
        scratch_parent: str | None = None,
        storage_secret: str | None = None,
        allowed_policy_digests: Sequence[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("inlets", [asset])
        super().__init__(**kwargs)
        if not callable(python_callable):
            raise TypeError("python_callable must be callable")
        self.python_callable = python_callable
        self.package_uri = package_uri
        self.expected_package_id = expected_package_id
        self.asset = asset
        self.vault_conn_id = vault_conn_id or trainer_vault_conn_id()  # the deployment's trainer identity
        self.data_key = data_key
        self.signing_key = signing_key
        self.op_kwargs = dict(op_kwargs or {})
        self.scratch_parent = scratch_parent
        self.storage_secret = storage_secret
        self.allowed_policy_digests = allowed_policy_digests

    def execute(self, context: Context) -> dict[str, Any]:
        from secure_data import settings
        from secure_data.handoff.consumer import open_package
        from secure_data.operators.storage import optional, storage_options_from_vault
        from secure_data.vault.keyservice import VaultKeyService

        ref = resolve_package_ref(context, self.asset, self.package_uri, self.expected_package_id)
        self.log.info("Opening package %s (from %s)", ref.uri, ref.source)
        key_service = VaultKeyService.from_conn_id(self.vault_conn_id, data_key=self.data_key,
                                                   signing_key=self.signing_key)
        allowed = self.allowed_policy_digests
        if allowed == "deployment":
            from secure_data.policy.anchors import trainer_policy_digests

            allowed = trainer_policy_digests()
        with open_package(ref.uri, key_service, expected_package_id=ref.package_id,
                          expected_manifest_digest=ref.manifest_digest, allowed_policy_digests=allowed,
                          scratch_parent=self.scratch_parent or None,
                          storage_options=storage_options_from_vault(
                              self.vault_conn_id, optional(self.storage_secret) or settings.trainer_storage_secret(),
                              self.log)) as package:
            self.log.info("Verified package %s: %d files, manifest %s, signature valid",
                          package.package_id, package.info.counts["files"], package.manifest_digest)
            result = self.python_callable(package, **self.op_kwargs)
        # The scratch space is gone now; only non-secret facts about the package remain.
        return self.lineage_result({"package_id": package.package_id, "package_uri": package.info.uri,
                                    "manifest_digest": package.manifest_digest, "result": result})
