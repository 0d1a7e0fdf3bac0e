"""Airflow 3 UI integration: serve run reports from the API server and link them from runs and tasks.

* a FastAPI app at ``/secure-data`` that serves ``<output root>/<dag>/<run>/report/**`` (ids and paths
  checked, no script allowed to run: report/serve.py), and a readable page where there is no report (yet);
* an external view on DAG runs ("Sanitization report") that opens it (Airflow shows plugin views on every
  DAG's runs: on a DAG without a report task the page says so);
* the ``RunReportLink`` extra link on the report task.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from secure_data.operators.links import REPORT_TAB_ROUTE, RunReportLink


def _create_app():
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI
    from fastapi.responses import FileResponse, HTMLResponse, Response

    from secure_data.dataset.stage import RunLayout
    from secure_data.report import serve
    from secure_data.settings import output_root

    # Airflow does not authenticate plugin apps: a report (quarantine table, file paths, thumbnails) is
    # served only to a caller the auth manager lets read that DAG's runs, exactly like /api/v2.
    app = FastAPI(title="secure-data reports",
                  dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])

    @app.middleware("http")
    async def security_headers(request, call_next):
        response = await call_next(request)
        for name, value in serve.SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def _state(dag_id: str, run_id: str) -> HTMLResponse:
        from airflow.utils.session import create_session

        with create_session() as session:
            page = _state_page(dag_id, run_id, session)
        return HTMLResponse(page.html(dag_id, run_id), status_code=page.status,
                            headers={"Content-Security-Policy": serve.STATE_PAGE_CSP})

    def _state_page(dag_id: str, run_id: str, session) -> serve.StatePage:
        from airflow.models.dag import DagModel
        from airflow.models.dagrun import DagRun
        from airflow.models.serialized_dag import SerializedDagModel
        from sqlalchemy import select

        dag_exists = session.scalar(select(DagModel.dag_id).where(DagModel.dag_id == dag_id)) is not None
        dag = SerializedDagModel.get_dag(dag_id, session=session) if dag_exists else None
        writes_report = dag is not None and any(
            t.task_type == "SanitizationReportOperator" for t in dag.tasks)
        run_state = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        return serve.state_page(dag_exists=dag_exists, writes_report=writes_report,
                                run_state=str(run_state) if run_state is not None else None)

    def _refused(reason: str) -> Response:
        return Response(f"refused: {reason}\n", status_code=404, media_type="text/plain; charset=utf-8")

    def _report_file(dag_id: str, run_id: str, relpath: str) -> Response:
        try:
            serve.check_dag_id(dag_id)
            serve.check_run_id(run_id)
            base = RunLayout.for_run(output_root(), dag_id, run_id).report
            target = serve.report_file(base, relpath)
        except serve.BadRequest as exc:
            return _refused(str(exc))
        if target is None:
            if relpath in ("", "index.html"):
                return _state(dag_id, run_id)
            return _refused("no such report file")
        return FileResponse(target, media_type=serve.MEDIA_TYPES[target.suffix.lower()])

    @app.get("/reports/{dag_id}/{run_id}/", response_class=HTMLResponse)
    def report_index(dag_id: str, run_id: str):
        return _report_file(dag_id, run_id, "")

    @app.get("/reports/{dag_id}/{run_id}/{relpath:path}")
    def report_asset(dag_id: str, run_id: str, relpath: str):
        return _report_file(dag_id, run_id, relpath)

    return app


class SecureDataPlugin(AirflowPlugin):
    name = "secure_data"
    operator_extra_links = [RunReportLink()]

    @property
    def fastapi_root_middlewares(self):  # readable trigger-form refusals (report/param_errors.py)
        from secure_data.report.param_errors import ReadableParamErrors

        return [{"middleware": ReadableParamErrors, "args": [], "kwargs": {}, "name": "secure-data param errors"}]

    @property
    def fastapi_apps(self):  # built lazily: FastAPI is only needed in the API server
        return [{"app": _create_app(), "url_prefix": "/secure-data", "name": "secure-data reports"}]

    external_views = [
        {
            "name": "Sanitization report",
            "href": "secure-data/reports/{DAG_ID}/{RUN_ID}/",
            "destination": "dag_run",
            "url_route": REPORT_TAB_ROUTE,
        }
    ]
