"""Report origin: a data supplier must not be able to run script in a report reader's browser.

A dataset with hostile file names goes through the real integrity stage (and so the real GX Data Docs
build) and the real report builder; the report folder is served by the real Airflow API app (our plugin
mounted as Airflow mounts it) and every page of it is opened in headless Chromium with the network cut:
no script may run, nothing may be loaded from anywhere else, and every response carries the CSP,
``nosniff`` and ``frame-ancestors``. The report app also refuses ``..`` as a DAG or run id.
"""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from secure_data.dataset.stage import RunLayout
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.run import run_integrity
from secure_data.report.build import build_report
from secure_data_testkit.browser import Watched, browser, live_app
from secure_data_testkit.datasets import make_yolo_dataset

DAG = "secure_pretraining_sanitization"
RUN = "manual__2026-12-02T00:00:00+00:00"
# A GIF named .jpg: GX lists it as a failing row of the format expectation (its key = this file name).
GIF_NAME = "<img src=x onerror=alert('gif-name')>.jpg"
# A byte-identical copy of a good image under a hostile name: GX lists both keys as duplicate hashes.
COPY_NAME = "<svg onload=alert('copy-name')>.jpg"


def _hostile_dataset(root: Path) -> Path:
    from PIL import Image

    data = make_yolo_dataset(root, n_train=5, n_val=2, width=160, height=120, seed=4)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "GIF")
    (data / "images/train" / GIF_NAME).write_bytes(buf.getvalue())
    (data / "labels/train" / (GIF_NAME[:-4] + ".txt")).write_text("0 0.5 0.5 0.2 0.2\n")
    (data / "images/train" / COPY_NAME).write_bytes((data / "images/train/train_00000.jpg").read_bytes())
    (data / "labels/train" / (COPY_NAME[:-4] + ".txt")).write_bytes(
        (data / "labels/train/train_00000.txt").read_bytes())
    return data


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """The real integrity stage + GX docs + report over the hostile dataset."""
    tmp = tmp_path_factory.mktemp("origin")
    data = _hostile_dataset(tmp / "dataset")
    output_root = tmp / "runs"
    layout = RunLayout.for_run(output_root, DAG, RUN)
    result = run_integrity(data, layout, config=IntegrityConfig(workers=1))
    build_report(layout, {"integrity": result.to_xcom()}, dag_id=DAG, run_id=RUN)
    pages = sorted(p.relative_to(layout.report).as_posix() for p in layout.report.rglob("*.html"))
    # The attack really reaches the pages: GX lists both hostile names as failing rows.
    gx_pages = [p for p in pages if p.startswith("gx/validations/")]
    images_page = next(p for p in gx_pages if "images" in p)
    text = (layout.report / images_page).read_text()
    assert "gif-name" in text and "copy-name" in text
    return output_root, layout, pages


@pytest.fixture(scope="module")
def report_server(hostile_run, tmp_path_factory):
    """The real Airflow API app (all users admins) serving the report folder on a loopback port."""
    import os

    output_root, _, _ = hostile_run
    env = {"SECURE_DATA_OUTPUT_ROOT": str(output_root), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from airflow.api_fastapi.app import create_app

        with live_app(create_app()) as origin:
            yield origin
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _base(origin: str) -> str:
    from urllib.parse import quote

    return f"{origin}/secure-data/reports/{DAG}/{quote(RUN, safe='')}/"


def test_no_script_runs_and_nothing_remote_loads_on_any_report_page(airflow_home, hostile_run, report_server):
    _, _, pages = hostile_run
    assert "index.html" in pages and "gx/index.html" in pages and len(pages) >= 5
    with browser() as chromium:
        context = chromium.new_context()
        for rel in pages:
            watched = Watched.open(context, report_server)
            response = watched.goto(_base(report_server) + rel)
            assert response.status == 200, rel
            watched.page.wait_for_timeout(200)  # an onerror/onload handler would have fired by now
            assert watched.script_ran() == [], (rel, watched.script_ran())
            assert watched.outside == [], (rel, watched.outside)
            for resp in watched.responses:
                if "/secure-data/" in resp.url:
                    headers = resp.all_headers()
                    csp = headers.get("content-security-policy", "")
                    assert "sandbox" in csp and "frame-ancestors 'self'" in csp, resp.url
                    assert "default-src 'none'" in csp, resp.url
                    assert headers.get("x-content-type-options") == "nosniff", resp.url
            watched.page.close()
        # The hostile names are shown as text (escaped), where a reader expects them.
        watched = Watched.open(context, report_server)
        watched.goto(_base(report_server) + "index.html")
        assert watched.page.get_by_text(GIF_NAME, exact=False).count() >= 1
        images_page = next(p for p in pages if p.startswith("gx/validations/") and "images" in p)
        watched.goto(_base(report_server) + images_page)
        assert watched.page.get_by_text("onerror=alert('gif-name')", exact=False).count() >= 1
        assert watched.page.get_by_text("onload=alert('copy-name')", exact=False).count() >= 1
        assert watched.script_ran() == [] and watched.outside == []


def test_gx_pages_opened_from_disk_run_no_script_and_load_nothing_remote(hostile_run):
    """The same pages opened straight from the report folder (no server, no CSP header): still inert."""
    _, layout, pages = hostile_run
    with browser() as chromium:
        context = chromium.new_context()
        for rel in pages:
            watched = Watched.open(context)
            watched.goto((layout.report / rel).as_uri())
            watched.page.wait_for_timeout(200)
            assert watched.script_ran() == [] and watched.outside == [], (rel, watched.dialogs, watched.outside)
            watched.page.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_dot_dot_dag_or_run_id_is_refused(airflow_home, hostile_run, report_server):
    """``%2e%2e`` as the DAG id once reached the handler and was used as a path component: it named a
    folder beside the output root. A report planted there must not be served."""
    from secure_data.dataset.stage import run_dir_name

    output_root, _, _ = hostile_run
    planted = output_root.parent / run_dir_name(RUN) / "report"
    planted.mkdir(parents=True, exist_ok=True)
    (planted / "index.html").write_text("PLANTED OUTSIDE THE OUTPUT ROOT")
    from urllib.parse import quote

    run = quote(RUN, safe="")
    for path in (f"/secure-data/reports/%2e%2e/{run}/", f"/secure-data/reports/%2E%2E/{run}/index.html",
                 f"/secure-data/reports/{DAG}/%2e%2e/", f"/secure-data/reports/{DAG}/{run}/..%2F..%2F..%2Fx.html"):
        status, body = _get(report_server + path)
        assert status in (403, 404), (path, status)
        assert "PLANTED" not in body, path
