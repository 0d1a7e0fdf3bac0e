"""Airflow 3 UI integration: serve run reports from the API server and link them from runs and tasks.

* a FastAPI app at ``/secure-data`` that serves ``<output root>/<dag>/<run>/report/**`` (path-checked);
* an external view on every DAG run ("Sanitization report") that opens it;
* the ``RunReportLink`` extra link on the report task.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from secure_data.operators.links import RunReportLink


def _create_app():
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse

    from secure_data.dataset.stage import RunLayout
    from secure_data.settings import output_root

    # Airflow does not authenticate plugin apps: a report (quarantine table, file paths, thumbnails) is
    # served only to a caller the auth manager lets read that DAG's runs, exactly like /api/v2.
    app = FastAPI(title="secure-data reports",
                  dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])

    def _report_file(dag_id: str, run_id: str, relpath: str):
        base = RunLayout.for_run(output_root(), dag_id, run_id).report.resolve()
        target = (base / (relpath or "index.html")).resolve()
        if not target.is_relative_to(base):
            raise HTTPException(status_code=404, detail="not found")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            raise HTTPException(status_code=404, detail=f"no report for {dag_id} / {run_id} (yet)")
        return FileResponse(target)

    @app.get("/reports/{dag_id}/{run_id}/", response_class=HTMLResponse)
    def report_index(dag_id: str, run_id: str):
        return _report_file(dag_id, run_id, "index.html")

    @app.get("/reports/{dag_id}/{run_id}/{relpath:path}")
    def report_asset(dag_id: str, run_id: str, relpath: str):
        return _report_file(dag_id, run_id, relpath)

    return app


class SecureDataPlugin(AirflowPlugin):
    name = "secure_data"
    operator_extra_links = [RunReportLink()]

    @property
    def fastapi_apps(self):  # built lazily: FastAPI is only needed in the API server
        return [{"app": _create_app(), "url_prefix": "/secure-data", "name": "secure-data reports"}]

    external_views = [
        {
            "name": "Sanitization report",
            "href": "secure-data/reports/{DAG_ID}/{RUN_ID}/",
            "destination": "dag_run",
            "url_route": "secure-data-report",
        }
    ]
