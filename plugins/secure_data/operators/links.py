"""Operator extra links."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator


class RunReportLink(BaseOperatorLink):
    """'Run report' button on the report task: opens the run's HTML report served by the plugin."""

    name = "Run report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from secure_data.settings import report_url

        return report_url(ti_key.dag_id, ti_key.run_id)
