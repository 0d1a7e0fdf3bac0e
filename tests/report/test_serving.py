"""The report app's pure parts: id checks, the readable no-report pages, readable param refusals."""

from __future__ import annotations

import pytest

from secure_data.operators.links import report_tab_url
from secure_data.report import serve
from secure_data.report.param_errors import readable


@pytest.mark.parametrize("dag_id", ["..", ".", "a/b", "", "x" * 251, "bad id", "dag\x00"])
def test_bad_dag_ids_are_refused(dag_id):
    with pytest.raises(serve.BadRequest):
        serve.check_dag_id(dag_id)


@pytest.mark.parametrize("run_id", ["..", ".", "...", "a/b", "a\\b", "", "r\n", "x" * 251])
def test_bad_run_ids_are_refused(run_id):
    with pytest.raises(serve.BadRequest):
        serve.check_run_id(run_id)


def test_airflow_run_ids_are_accepted():
    for run_id in ("manual__2026-12-02T00:53:15.385318+00:00", "asset_triggered__2026-12-02T00:54:10+00:00",
                   "my run #1"):
        assert serve.check_run_id(run_id) == run_id


def test_report_file_stays_in_the_report_folder(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "index.html").write_text("ok")
    (tmp_path / "secret.html").write_text("no")
    assert serve.report_file(tmp_path / "report", "") == (tmp_path / "report" / "index.html").resolve()
    with pytest.raises(serve.BadRequest):
        serve.report_file(tmp_path / "report", "../secret.html")
    with pytest.raises(serve.BadRequest):
        serve.report_file(tmp_path / "report", "index.py")
    assert serve.report_file(tmp_path / "report", "missing.html") is None


def test_state_pages_say_what_is_going_on_and_escape_ids():
    running = serve.state_page(dag_exists=True, writes_report=True, run_state="running")
    assert running.status == 200 and running.refresh
    html = running.html("d", "<b>r</b>")
    assert 'http-equiv="refresh"' in html and "&lt;b&gt;r&lt;/b&gt;" in html and "<b>r" not in html
    training = serve.state_page(dag_exists=True, writes_report=False, run_state="running")
    assert training.title == "No sanitization report for this DAG" and not training.refresh
    failed = serve.state_page(dag_exists=True, writes_report=True, run_state="failed")
    assert failed.status == 404 and "failed" in failed.message
    assert serve.state_page(dag_exists=False, writes_report=False, run_state=None).status == 404


def test_param_refusal_becomes_one_readable_sentence():
    detail = ("Invalid input for param reference_digest: 'abc123' does not match '^sha256:[0-9a-f]{64}$'\n\n"
              "Failed validating 'pattern' in schema:\n    {'type': ['null', 'string']}\n\nOn instance:\n    'abc123'")
    params = {"reference_digest": {"schema": {"title": "Reference manifest digest"},
                                   "description": "sha256:<hex> of the reference manifest."}}
    text = readable(detail, params)
    assert text.startswith("Reference manifest digest (reference_digest): 'abc123' does not match")
    assert "Expected: sha256:<hex> of the reference manifest." in text and "Failed validating" not in text
    assert readable("something else", params) == "something else"


def test_run_report_link_opens_the_runs_report_tab_inside_airflow():
    assert (report_tab_url("secure_pretraining_sanitization", "manual__2026-12-02T00:53:15+00:00")
            == "/dags/secure_pretraining_sanitization/runs/manual__2026-12-02T00%3A53%3A15%2B00%3A00"
               "/plugin/secure-data-report")
