"""The operator's experience in the real Airflow UI, driven in headless Chromium (Playwright on Debian's
chromium), against one real stack (OpenBao, Airflow api-server/scheduler/dag-processor/triggerer) and
ONE sanitization run shared by every assertion, triggered from the form with its defaults.

Set ``SECURE_DATA_UI_SCREENSHOTS=<dir>`` to keep the screenshots (docs/ui/ holds the committed ones).
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import pytest

from secure_data_testkit.browser import Watched, browser, require_chromium
from secure_data_testkit.demo import SANITIZE_DAG, TRAIN_DAG, DemoServices, make_demo_dataset

pytestmark = pytest.mark.slow

TILES = ("n-input", "n-accepted", "n-quarantined", "n-warnings", "n-boxes", "n-residual", "n-withheld", "n-findings",
         "n-rate")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("SECURE_DATA_UI_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    require_chromium()  # skip (or fail under CI) before starting a stack that no browser will look at
    work = tmp_path_factory.mktemp("ui")
    # A small dataset with the two real photos (faces) as the form's default source.
    source = make_demo_dataset(work / "dataset", n_train=4, n_val=2)
    with DemoServices(workdir=work / "svc", extra_env={"SECURE_DATA_SOURCE": str(source)},
                      log=lambda m: print(f"[ui] {m}")) as svc:
        yield svc


@pytest.fixture(scope="module")
def chromium():
    with browser() as instance:
        yield instance


@pytest.fixture(scope="module")
def context(chromium):
    ctx = chromium.new_context(viewport={"width": 1400, "height": 1000})
    yield ctx
    ctx.close()


def _page(context, services) -> Watched:
    return Watched.open(context, services.stack.url)


def _open_trigger_form(watched: Watched, url: str):
    watched.goto(f"{url}/dags/{SANITIZE_DAG}")
    watched.page.get_by_role("button", name="Trigger").first.click()
    dialog = watched.page.get_by_role("dialog")
    dialog.get_by_text("Anonymization", exact=True).wait_for()
    return dialog


def _field_row(watched: Watched, dialog, param: str):
    return dialog.locator('[data-scope="field"][data-part="root"]').filter(
        has=watched.page.locator(f'[name="element_{param}"]'))


@pytest.fixture(scope="module")
def run(services, context, shots):
    """The one run: the trigger form submitted with its defaults, as an operator would."""
    watched = _page(context, services)
    dialog = _open_trigger_form(watched, services.stack.url)
    dialog.get_by_text("Anonymization", exact=True).click()
    watched.page.screenshot(path=str(shots / "trigger-form.png"))
    started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    with watched.page.expect_response(
            lambda r: r.url.endswith(f"/dags/{SANITIZE_DAG}/dagRuns") and r.request.method == "POST") as info:
        dialog.get_by_role("button", name="Trigger").click()
    response = info.value
    assert response.status == 200, response.text()
    run_id = response.json()["dag_run_id"]
    watched.page.close()
    return {"run_id": run_id, "started": started}


def _report_tab(url: str, dag_id: str, run_id: str) -> str:
    return f"{url}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}/plugin/secure-data-report"


def test_home_page_shows_no_plugin_import_error(services, context):
    errors = services.stack.api("GET", "/api/v2/plugins/importErrors")
    assert errors["total_entries"] == 0, errors
    watched = _page(context, services)
    watched.goto(services.stack.url + "/")
    watched.page.get_by_text("Health").first.wait_for()
    assert watched.page.get_by_text(re.compile("import error", re.I)).count() == 0
    assert watched.outside == [] and watched.dialogs == []
    watched.page.close()


def test_a_bad_value_gets_a_readable_message_next_to_its_field(services, context, shots):
    watched = _page(context, services)
    dialog = _open_trigger_form(watched, services.stack.url)
    dialog.get_by_text("Source", exact=True).click()
    # An empty required field: the form says so beside it and keeps Trigger disabled.
    source = dialog.locator('[name="element_source"]')
    source.fill("")
    source.blur()
    row = _field_row(watched, dialog, "source")
    assert row.locator('[data-part="error-text"]').inner_text() == "This field is required"
    assert not dialog.get_by_role("button", name="Trigger").is_enabled()
    watched.page.screenshot(path=str(shots / "trigger-form-required.png"))
    # A value of the wrong form: refused at trigger time with a sentence naming the field, not a schema dump.
    source.fill("/nowhere")
    digest = dialog.locator('[name="element_reference_digest"]')
    digest.fill("abc123")
    runs_before = len(services.stack.runs(SANITIZE_DAG))
    dialog.get_by_role("button", name="Trigger").click()
    message = dialog.get_by_text(re.compile(r"Reference manifest digest \(reference_digest\)"))
    message.wait_for()
    text = message.inner_text()
    assert "'abc123'" in text and "Nothing was triggered" in text
    assert dialog.get_by_text("Failed validating").count() == 0
    assert len(services.stack.runs(SANITIZE_DAG)) == runs_before
    watched.page.close()


def test_report_tab_waits_for_the_run_then_shows_every_tile(services, context, run, shots):
    """Opened while the run is going: a readable "not written yet" page that refreshes itself into the
    report when the run finishes (no reload). Every tile filled, nothing loaded from elsewhere."""
    watched = _page(context, services)
    watched.goto(_report_tab(services.stack.url, SANITIZE_DAG, run["run_id"]))
    frame = watched.page.frame_locator("iframe").first
    frame.locator("#state-title, h1").first.wait_for()
    first = frame.locator("h1").first.inner_text()
    state = services.stack.wait_for_run(SANITIZE_DAG, run["run_id"], timeout=900)
    assert state["state"] == "success", services.stack.task_instances(SANITIZE_DAG, run["run_id"])
    if first != "secure-data run report":  # the page we opened was the in-progress one: it must turn over
        assert first == "Report not written yet"
    frame.get_by_text("secure-data run report").wait_for(timeout=60_000)
    tiles = {tile: frame.locator(f"#{tile}").inner_text().strip() for tile in TILES}
    assert all(v not in ("", "-") for v in tiles.values()), tiles
    assert float(tiles["n-rate"]) > 0 and int(tiles["n-boxes"]) > 0
    assert "bad" not in (frame.locator("#n-residual").get_attribute("class") or "")
    watched.page.screenshot(path=str(shots / "report-tab.png"))
    # The report task's "Run report" link (task Details) opens this same tab, inside the Airflow UI.
    quoted = urllib.parse.quote(run["run_id"], safe="")
    links = services.stack.api("GET", f"/api/v2/dags/{SANITIZE_DAG}/dagRuns/{quoted}/taskInstances/report/links")
    link = links["extra_links"]["Run report"]
    assert link.endswith("/plugin/secure-data-report"), link
    via_link = _page(context, services)
    via_link.goto(services.stack.url + link)
    via_link.page.frame_locator("iframe").first.get_by_text("secure-data run report").wait_for()
    via_link.page.close()
    report = _page(context, services)  # the report page on its own, for a whole-page screenshot
    report.goto(services.stack.url + services.stack.xcom(SANITIZE_DAG, run["run_id"], "report")["report_url"])
    report.page.screenshot(path=str(shots / "report-page.png"), full_page=True)
    assert report.outside == [] and report.dialogs == []
    report.page.close()
    assert watched.outside == [] and watched.dialogs == [], (watched.outside, watched.dialogs)
    watched.page.close()


def test_gx_data_docs_render_with_no_network(services, context, run, shots):
    services.stack.wait_for_run(SANITIZE_DAG, run["run_id"], timeout=900)
    watched = _page(context, services)  # every request off the Airflow origin is aborted and recorded
    watched.goto(_report_tab(services.stack.url, SANITIZE_DAG, run["run_id"]))
    frame = watched.page.frame_locator("iframe").first
    frame.locator("#gx-link").click()
    frame.get_by_text("Validation Results").first.wait_for()
    watched.page.screenshot(path=str(shots / "gx-data-docs-index.png"))
    assert frame.locator("table").count() >= 1
    assert frame.get_by_text("integrity_images").count() >= 1  # the results table is filled (no script needed)
    frame.locator('a[href*="validations/integrity_images/"]').first.click()
    try:
        frame.get_by_text("Expectation Validation Result").first.wait_for()
    finally:
        watched.page.screenshot(path=str(shots / "gx-data-docs.png"))
    assert frame.get_by_text("Unsuccessful Expectations").count() >= 1
    assert watched.outside == [] and watched.dialogs == [], (watched.outside, watched.dialogs)
    watched.page.close()


def test_training_runs_have_a_readable_report_tab(services, context, run):
    """Airflow shows plugin tabs on every DAG's runs: on the training DAG the tab says there is no report."""
    services.stack.wait_for_run(SANITIZE_DAG, run["run_id"], timeout=900)
    runs = []
    for _ in range(60):
        runs = [r for r in services.stack.runs(TRAIN_DAG) if (r.get("queued_at") or r["run_after"]) >= run["started"]]
        if runs:
            break
        time.sleep(2)
    assert runs, "the package Asset event started no training run"
    watched = _page(context, services)
    watched.goto(_report_tab(services.stack.url, TRAIN_DAG, runs[0]["dag_run_id"]))
    frame = watched.page.frame_locator("iframe").first
    frame.get_by_text("No sanitization report for this DAG").wait_for()
    assert watched.outside == [] and watched.dialogs == []
    watched.page.close()
