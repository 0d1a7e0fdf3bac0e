"""``IntegrityOperator``: the thin Airflow shell around ``secure_data.integrity.run_integrity``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from secure_data.operators.base import ACTIONS, StageOperator, as_list, as_mapping, is_template
from secure_data.operators.storage import optional as _optional
from secure_data.operators.storage import storage_options_from_kv, storage_options_from_vault
from secure_data.policy.anchors import sanitizer_vault_conn_id

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["IntegrityMergeOperator", "IntegrityOperator", "IntegrityShardOperator", "storage_options_from_kv"]

INTEGRITY_POLICIES: tuple[str, ...] = (
    "background_images", "empty_labels", "orphan_labels", "invalid_labels", "unexpected_files", "tamper_added",
    "tamper_removed", "tamper_modified", "gx_policy", "gx_dataset_policy")


def _check_fsspec_scheme(uri: str) -> None:
    """Fail with the fix, not an fsspec traceback, when the scheme's filesystem is not installed."""
    import fsspec
    from fsspec.registry import known_implementations

    scheme = uri.split("://", 1)[0].lower()
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        hint = known_implementations.get(scheme, {}).get("err", "")
        extra = " (pip install 'secure-data[s3]')" if scheme in ("s3", "s3a") else ""
        raise ValueError(f"no filesystem for {scheme}:// sources{extra}: {hint or exc}") from None


class IntegrityOperator(StageOperator):
    """Check a raw YOLO dataset and publish the integrity manifest; returns ``StageResult.to_xcom()``.

    :param source: local dataset directory, or an object-storage URI (``s3://bucket/prefix``,
        ``file:///...``) that is mirrored into the run folder first. Templated.
    :param output_root: root of the run-scoped folders (default: ``SECURE_DATA_OUTPUT_ROOT``). Templated.
    :param reference_manifest: path of the last trusted manifest to diff against (added /
        removed / modified files, each per its tamper policy). Templated.
    :param reference_digest: its expected ``sha256:<hex>`` digest (checked when given). Templated.
    :param config: ``IntegrityConfig`` fields as a dict (thresholds and policies). Templated;
        a literal is checked when the DAG file is parsed.
    :param source_conn_id: Airflow connection for the object store (its credentials may come
        from Vault through Airflow's Vault secrets backend).
    :param storage_secret: KV v2 path (on ``vault_conn_id``'s mount) holding storage credentials
        (``access_key_id``, ``secret_access_key``, ``endpoint_url``...); read at execute time and masked.
    :param vault_conn_id: Vault connection used for ``storage_secret`` (default: the deployment's
        sanitizer identity, ``SECURE_DATA_SANITIZER_VAULT_CONN_ID`` or ``vault_sanitizer``).
    :param background_images, empty_labels, orphan_labels, invalid_labels, unexpected_files,
        tamper_added, tamper_removed, tamper_modified, gx_policy, gx_dataset_policy:
        policy overrides ("fail" | "warn" | "quarantine"; the first two also "accept"), applied over
        ``config``. Templated.

    A check with policy ``fail`` that fires fails the task without retries, after the manifest,
    quarantine and reports were written.
    """

    template_fields: Sequence[str] = (
        *StageOperator.template_fields, "source", "reference_manifest", "reference_digest", "config",
        "source_conn_id", "storage_secret", "vault_conn_id", *INTEGRITY_POLICIES)
    template_fields_renderers = {"config": "json"}
    policy_fields = INTEGRITY_POLICIES
    policy_choices = {"background_images": (*ACTIONS, "accept"), "empty_labels": (*ACTIONS, "accept")}
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        source: str,
        output_root: str | None = None,
        reference_manifest: str | None = None,
        reference_digest: str | None = None,
        config: dict[str, Any] | str | None = None,
        source_conn_id: str | None = None,
        storage_secret: str | None = None,
        vault_conn_id: str | None = None,
        background_images: str | None = None,
        empty_labels: str | None = None,
        orphan_labels: str | None = None,
        invalid_labels: str | None = None,
        unexpected_files: str | None = None,
        tamper_added: str | None = None,
        tamper_removed: str | None = None,
        tamper_modified: str | None = None,
        gx_policy: str | None = None,
        gx_dataset_policy: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            output_root=output_root, background_images=background_images, empty_labels=empty_labels,
            orphan_labels=orphan_labels, invalid_labels=invalid_labels, unexpected_files=unexpected_files,
            tamper_added=tamper_added, tamper_removed=tamper_removed, tamper_modified=tamper_modified,
            gx_policy=gx_policy, gx_dataset_policy=gx_dataset_policy, **kwargs)
        self.source = source
        self.reference_manifest = reference_manifest
        self.reference_digest = reference_digest
        self.config = config
        self.source_conn_id = source_conn_id
        self.storage_secret = storage_secret
        self.vault_conn_id = vault_conn_id or sanitizer_vault_conn_id()  # as every sanitizer-side operator
        if config is not None and not is_template(config):  # a literal config fails at parse time
            self._config(rendered=False)

    def _config(self, *, rendered: bool = True) -> Any:
        from secure_data.integrity.config import IntegrityConfig

        config = IntegrityConfig.from_dict(as_mapping(self.config, "config"))
        return config.with_overrides(**self.check_policies(rendered=rendered))

    def _source(self) -> tuple[Any, dict[str, Any] | None]:
        """``(source, storage_options)`` for ``run_integrity``.

        With ``source_conn_id`` the source is an ``ObjectStoragePath`` on that Airflow connection
        (the scheme's filesystem comes from its provider, e.g. ``apache-airflow-providers-amazon``
        for ``s3://``). Without one, the URI goes straight to fsspec (``s3fs`` for ``s3://``: the
        ``secure-data[s3]`` extra) with the options read from ``storage_secret`` in Vault.
        """
        from secure_data.dataset.storage import is_remote

        if self.source is None or not str(self.source).strip():
            raise ValueError("IntegrityOperator: source is empty (a dataset directory or object-storage URI)")
        if not is_remote(self.source):
            return self.source, None
        options = storage_options_from_vault(self.vault_conn_id, self.storage_secret, self.log)
        conn_id = _optional(self.source_conn_id)
        if conn_id is None:
            _check_fsspec_scheme(str(self.source))
            return str(self.source), options
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(self.source, conn_id=conn_id, **options), None

    def run_stage(self, context: Context, layout: Any) -> Any:
        from secure_data.integrity.run import run_integrity

        source, storage_options = self._source()
        return run_integrity(source, layout, config=self._config(), storage_options=storage_options,
                             reference_manifest=_optional(self.reference_manifest),
                             reference_digest=_optional(self.reference_digest))

    def describe(self, result: Any) -> None:
        c = result.counts
        self.log.info("Integrity %s: %s of %s files accepted, %s quarantined, %s warned; manifest %s (%s)",
                      result.figures.verdict, c.accepted, c.files, c.quarantined, c.warned, result.manifest_path,
                      result.manifest_digest)


class IntegrityShardOperator(IntegrityOperator):
    """Hash and check one shard of the files, for dynamic task mapping over big datasets::

        shards = IntegrityShardOperator.partial(task_id="integrity_shard", source=src, shards=4).expand(
            shard=[0, 1, 2, 3])
        integrity = IntegrityMergeOperator(task_id="integrity", source=src, shard_results=shards.output)

    Takes every ``IntegrityOperator`` argument (give the merge task the same ones: it checks that
    the shards ran with the same source and configuration) plus ``shard`` (0-based) and ``shards``.
    Files are assigned by a hash of their sample (an image and its label land in the same shard).
    Returns a small dict (shard, shards, path, digest, files); the merge does the dataset-level
    checks, quarantine and the manifest, byte-identical to an unsharded run's.
    """

    template_fields: Sequence[str] = (*IntegrityOperator.template_fields, "shard", "shards")

    def __init__(self, *, shard: int | str, shards: int | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.shards = shards

    def execute(self, context: Context) -> dict[str, Any]:
        from secure_data.integrity.shards import run_integrity_shard

        self.check_policies()
        source, storage_options = self._source()
        result = run_integrity_shard(source, self.layout(context), shard=int(self.shard), shards=int(self.shards),
                                     config=self._config(), storage_options=storage_options)
        self.log.info("Integrity shard %s/%s: %s files checked (%s)", result["shard"], result["shards"],
                      result["files"], result["digest"])
        return self.lineage_result(result)


class IntegrityMergeOperator(IntegrityOperator):
    """Finish a sharded integrity run (see ``IntegrityShardOperator``); returns the stage's ``StageResult``.

    :param shard_results: the shard tasks' XComs (``shards.output``: a list, one dict per shard).
    """

    template_fields: Sequence[str] = (*IntegrityOperator.template_fields, "shard_results")

    def __init__(self, *, shard_results: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard_results = shard_results

    def run_stage(self, context: Context, layout: Any) -> Any:
        from secure_data.integrity.shards import merge_integrity

        source, storage_options = self._source()
        return merge_integrity(source, layout, as_list(self.shard_results, "shard_results"), config=self._config(),
                               storage_options=storage_options,
                               reference_manifest=_optional(self.reference_manifest),
                               reference_digest=_optional(self.reference_digest))
