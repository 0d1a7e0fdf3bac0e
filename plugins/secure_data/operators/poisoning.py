"""``PoisoningOperator``: the thin Airflow shell around ``secure_data.poisoning.run_poisoning``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from secure_data.operators.base import StageOperator, as_mapping, is_template
from secure_data.operators.storage import optional

if TYPE_CHECKING:
    from airflow.sdk import Context

POISONING_POLICIES: tuple[str, ...] = (
    "duplicate", "duplicate_label_conflict", "split_leakage", "box_outlier", "box_misaligned", "class_confusion",
    "trigger_patch", "distribution_drift", "unreadable")


class PoisoningOperator(StageOperator):
    """Screen the integrity stage's accepted samples for poisoning; returns ``StageResult.to_xcom()``.

    Writes ``<run>/poisoning/findings.jsonl`` and ``<run>/poisoning/manifest.jsonl`` (every upstream
    record kept; quarantined samples get status + reason and a copy under ``<run>/quarantine/poisoning``).

    :param upstream: the integrity task's ``StageResult`` XCom (templated; pass ``integrity.output``).
    :param output_root: root of the run-scoped folders (default ``SECURE_DATA_OUTPUT_ROOT``). Templated.
    :param reference_manifest: manifest of a trusted earlier dataset for the drift check. Templated.
    :param reference_digest: its expected ``sha256:<hex>`` digest (checked when given). Templated.
    :param config: ``PoisoningConfig`` fields as a dict (thresholds, ``policies``, ``workers``). Templated;
        a literal is checked when the DAG file is parsed.
    :param duplicate, duplicate_label_conflict, split_leakage, box_outlier, box_misaligned,
        class_confusion, trigger_patch, distribution_drift, unreadable: policy overrides
        ("fail" | "warn" | "quarantine"; drift: "warn" | "fail"), applied over ``config``. Templated.

    A check with policy ``fail`` that fires fails the task without retries (the data will not change
    on a retry); the findings and manifest are written first, for inspection.
    """

    template_fields: Sequence[str] = (*StageOperator.template_fields, "upstream", "reference_manifest",
                                      "reference_digest", "config", *POISONING_POLICIES)
    template_fields_renderers = {"config": "json", "upstream": "json"}
    policy_fields = POISONING_POLICIES
    ui_color = "#fdecea"

    def __init__(
        self,
        *,
        upstream: Any,
        output_root: str | None = None,
        reference_manifest: str | None = None,
        reference_digest: str | None = None,
        config: dict[str, Any] | str | None = None,
        duplicate: str | None = None,
        duplicate_label_conflict: str | None = None,
        split_leakage: str | None = None,
        box_outlier: str | None = None,
        box_misaligned: str | None = None,
        class_confusion: str | None = None,
        trigger_patch: str | None = None,
        distribution_drift: str | None = None,
        unreadable: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            output_root=output_root, duplicate=duplicate, duplicate_label_conflict=duplicate_label_conflict,
            split_leakage=split_leakage, box_outlier=box_outlier, box_misaligned=box_misaligned,
            class_confusion=class_confusion, trigger_patch=trigger_patch, distribution_drift=distribution_drift,
            unreadable=unreadable, **kwargs)
        self.upstream = upstream
        self.reference_manifest = reference_manifest
        self.reference_digest = reference_digest
        self.config = config
        if config is not None and not is_template(config):  # a literal config fails at parse time
            self._config(rendered=False)

    def _config(self, *, rendered: bool = True) -> Any:
        from secure_data.poisoning import PoisoningConfig

        config = PoisoningConfig.from_dict(as_mapping(self.config, "config"))
        overrides = self.check_policies(rendered=rendered)
        return config.with_policies(**overrides) if overrides else config

    def run_stage(self, context: Context, layout: Any) -> Any:
        from secure_data.poisoning import run_poisoning

        return run_poisoning(self.upstream_result(self.upstream), layout, config=self._config(),
                             reference_manifest=optional(self.reference_manifest),
                             reference_digest=optional(self.reference_digest))

    def describe(self, result: Any) -> None:
        f, c = result.figures, result.counts
        self.log.info("Poisoning: %s findings by check, %s samples quarantined; %s of %s files accepted; "
                      "manifest %s (%s)", dict(f.findings_by_check), f.quarantined_samples, c.accepted, c.files,
                      result.manifest_path, result.manifest_digest)
