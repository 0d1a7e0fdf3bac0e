"""Operator extra links."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator


REPORT_TAB_ROUTE = "secure-data-report"  # the plugin's external view (plugin.py): the run's report tab


def report_tab_url(dag_id: str, run_id: str) -> str:
    """The run's **Sanitization report** tab in the Airflow UI (relative to the API server root)."""
    from urllib.parse import quote

    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/plugin/{REPORT_TAB_ROUTE}"


class RunReportLink(BaseOperatorLink):
    """'Run report' link on the report task: opens the run's **Sanitization report** tab.

    Airflow opens a same-origin extra link in the same browser tab: pointing it at the report tab
    (not at the bare report page) keeps the reader inside the Airflow UI.
    """

    name = "Run report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return report_tab_url(ti_key.dag_id, ti_key.run_id)
