"""Render the per-run HTML report at the end of a run (also when a stage failed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, TriggerRule

from secure_data.lineage.mixin import OpenLineageMixin
from secure_data.operators.links import RunReportLink

if TYPE_CHECKING:
    from airflow.sdk import Context


class SanitizationReportOperator(OpenLineageMixin, BaseOperator):
    """Build ``<run>/report/index.html`` from the stages' XComs (paths, digests, counts: never secrets).

    :param stage_task_ids: stage name -> task id whose XCom is that stage's StageResult
        (``integrity``, ``poisoning``, ``anonymize``, ``handoff``); missing or failed stages are shown as such.
    :param output_root: root of run-scoped folders (default: ``SECURE_DATA_OUTPUT_ROOT``).
    """

    template_fields: Sequence[str] = ("output_root",)
    operator_extra_links = (RunReportLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        stage_task_ids: Mapping[str, str],
        output_root: str | None = None,
        trigger_rule: str = TriggerRule.ALL_DONE,
        **kwargs: Any,
    ) -> None:
        super().__init__(trigger_rule=trigger_rule, **kwargs)
        self.stage_task_ids = dict(stage_task_ids)
        self.output_root = output_root

    def execute(self, context: Context) -> dict[str, Any]:
        from secure_data.dataset.stage import RunLayout
        from secure_data.report.build import build_report
        from secure_data.settings import output_root, report_url

        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        layout = RunLayout.for_run(self.output_root or output_root(), dag_id, run_id)
        ti = context["ti"]
        stages = {name: ti.xcom_pull(task_ids=task_id, default=None) for name, task_id in self.stage_task_ids.items()}
        path = build_report(layout, stages, dag_id=dag_id, run_id=run_id)
        self.log.info("Report written to %s (served at %s)", path, report_url(dag_id, run_id))
        return self.lineage_result({"report_path": str(path), "report_url": report_url(dag_id, run_id)})
