"""``PoisoningOperator``: the thin Airflow shell around ``secure_data.poisoning.run_poisoning``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from secure_data.lineage.mixin import OpenLineageMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

_ACTIONS = ("fail", "warn", "quarantine")  # secure_data.poisoning.config.ACTIONS (checked again at execute)


class PoisoningOperator(OpenLineageMixin, BaseOperator):
    """Screen the integrity stage's accepted samples for poisoning; returns ``StageResult.to_xcom()``.

    Writes ``<run>/poisoning/findings.jsonl`` and ``<run>/poisoning/manifest.jsonl`` (every upstream
    record kept; quarantined samples get status + reason and a copy under ``<run>/quarantine/poisoning``).

    :param upstream: the integrity task's ``StageResult`` XCom (templated; pass ``integrity.output``).
    :param output_root: root of the run-scoped folders (default ``SECURE_DATA_OUTPUT_ROOT``). Templated.
    :param reference_manifest: manifest of a trusted earlier dataset for the drift check. Templated.
    :param reference_digest: its expected ``sha256:<hex>`` digest (checked when given). Templated.
    :param config: ``PoisoningConfig`` fields as a dict (thresholds, ``policies``, ``workers``). Templated.
    :param duplicate, duplicate_label_conflict, split_leakage, box_outlier, box_misaligned,
        class_confusion, trigger_patch, distribution_drift, unreadable: policy overrides
        ("fail" | "warn" | "quarantine"; drift: "warn" | "fail"), applied over ``config``.

    A check with policy ``fail`` that fires fails the task without retries (the data will not change
    on a retry); the findings and manifest are written first, for inspection.
    """

    template_fields: Sequence[str] = ("upstream", "output_root", "reference_manifest", "reference_digest", "config")
    template_fields_renderers = {"config": "json", "upstream": "json"}
    ui_color = "#fdecea"

    def __init__(
        self,
        *,
        upstream: Any,
        output_root: str | None = None,
        reference_manifest: str | None = None,
        reference_digest: str | None = None,
        config: dict[str, Any] | None = None,
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
        super().__init__(**kwargs)
        self.upstream = upstream
        self.output_root = output_root
        self.reference_manifest = reference_manifest
        self.reference_digest = reference_digest
        self.config = config
        self.policies = {
            "duplicate": duplicate, "duplicate_label_conflict": duplicate_label_conflict,
            "split_leakage": split_leakage, "box_outlier": box_outlier, "box_misaligned": box_misaligned,
            "class_confusion": class_confusion, "trigger_patch": trigger_patch,
            "distribution_drift": distribution_drift, "unreadable": unreadable,
        }
        for name, value in self.policies.items():  # fail at DAG parse time, not at 3 a.m.
            if value is not None and "{{" not in str(value) and value not in _ACTIONS:
                raise ValueError(f"{name}={value!r}: must be one of {_ACTIONS}")

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from secure_data.dataset.stage import RunLayout, StageResult
        from secure_data.poisoning import PoisoningCheckFailed, PoisoningConfig, run_poisoning
        from secure_data.settings import output_root

        upstream = self.upstream
        if isinstance(upstream, str):  # a rendered template without native objects
            upstream = json.loads(upstream)
        if not isinstance(upstream, Mapping):
            raise TypeError(f"upstream must be the integrity StageResult XCom (dict), got {type(upstream).__name__}")
        config = PoisoningConfig.from_dict(self.config)
        overrides = {k: v for k, v in self.policies.items() if v is not None}
        if overrides:
            config = config.with_policies(**overrides)
        layout = RunLayout.for_run(self.output_root or output_root(), context["dag"].dag_id, context["run_id"])
        try:
            result = run_poisoning(StageResult.from_xcom(upstream), layout, config=config,
                                   reference_manifest=_optional(self.reference_manifest),
                                   reference_digest=_optional(self.reference_digest))
        except PoisoningCheckFailed as exc:
            self.log.error("Poisoning checks failed: %s", exc)
            raise AirflowFailException(str(exc)) from exc
        self.log.info("Poisoning: %s findings by check, %s samples quarantined; %s of %s files accepted; "
                      "manifest %s (%s)", result.extra.get("findings_by_check"),
                      result.extra.get("quarantined_samples"), result.counts.get("accepted"),
                      result.counts.get("files"), result.manifest_path, result.manifest_digest)
        return self.lineage_result(result.to_xcom())


def _optional(value: str | None) -> str | None:
    """A DAG param left empty renders as "" or "None": both mean "not given"."""
    if value is None or str(value).strip() in ("", "None"):
        return None
    return str(value)
