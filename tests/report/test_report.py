"""The run report renders real stage outputs, shows the key numbers, and opens in a real headless Chromium."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from secure_data.dataset.manifest import FileRecord, Reason, sha256_hex, write_manifest
from secure_data.dataset.stage import RunLayout, StageResult
from secure_data.report.build import build_report
from secure_data_testkit.browser import require_chromium
from secure_data_testkit.datasets import make_yolo_dataset

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def _stage(layout: RunLayout, name: str, data_root: Path, records: list[FileRecord], **extra) -> dict:
    path = layout.stage(name) / "manifest.jsonl"
    digest = write_manifest(path, {"stage": name}, records)
    counts = {"files": len(records), "accepted": sum(r.accepted for r in records),
              "quarantined": sum(not r.accepted for r in records),
              "images_accepted": sum(r.accepted and r.kind == "image" for r in records)}
    return StageResult(name, str(path), digest, counts, str(data_root), extra).to_xcom()


@pytest.fixture
def run_with_stages(tmp_path):
    data = make_yolo_dataset(tmp_path / "anonymized", n_train=5, n_val=2, width=200, height=150, seed=3)
    records = []
    for f in sorted(p for p in data.rglob("*") if p.is_file()):
        rel = f.relative_to(data).as_posix()
        blob = f.read_bytes()
        kind = "image" if rel.endswith(".jpg") else "label" if rel.endswith(".txt") else "meta"
        records.append(FileRecord(path=rel, sha256=sha256_hex(blob), size=len(blob), kind=kind,
                                  meta={"anonymized_boxes": 2} if kind == "image" else {}))
    bad = records[1].quarantined(Reason("image.truncated", "JPEG ends before EOI", "integrity"))
    records[1] = bad
    layout = RunLayout.for_run(tmp_path / "runs", "secure_pretraining_sanitization", "manual__2026-11-27T00:00:00")
    stages = {
        "integrity": _stage(layout, "integrity", data, records),
        "anonymize": _stage(layout, "anonymize", data, records, residual_detections=0, boxes=10,
                            boxes_per_class={"face": 7, "plate": 3}, images_per_second=12.5),
    }
    return layout, stages, bad


def test_report_shows_counts_quarantine_and_only_anonymized_thumbnails(run_with_stages):
    layout, stages, bad = run_with_stages
    html_path = build_report(layout, stages, dag_id="d", run_id="r")
    html = html_path.read_text()
    n_files = stages["integrity"]["counts"]["files"]
    assert f'id="n-input">{n_files}<' in html
    assert 'id="n-quarantined">1<' in html
    assert 'id="n-boxes">10<' in html and 'id="n-residual">0<' in html
    assert bad.path in html and "image.truncated" in html
    # thumbnails: one per accepted image of the anonymize stage, none for the quarantined one
    accepted_images = stages["anonymize"]["counts"]["images_accepted"]
    assert html.count("data:image/jpeg;base64,") == accepted_images
    assert f'alt="{bad.path}"' not in html


def test_report_refuses_tampered_outputs_for_thumbnails(run_with_stages):
    layout, stages, _ = run_with_stages
    victim = Path(stages["anonymize"]["data_root"]) / "images/train/train_00000.jpg"
    victim.write_bytes(victim.read_bytes()[:-10])  # not what the manifest recorded: must not be shown
    html = build_report(layout, stages, dag_id="d", run_id="r").read_text()
    assert 'alt="images/train/train_00000.jpg"' not in html


def test_report_renders_in_headless_chromium(run_with_stages, tmp_path):
    import cv2

    chromium = require_chromium()
    layout, stages, _ = run_with_stages
    html_path = build_report(layout, stages, dag_id="d", run_id="r")
    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1280,1600", html_path.as_uri()], check=True, capture_output=True, timeout=120)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[1] == 1280
    assert float(img.std()) > 10, "screenshot is blank"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                          html_path.as_uri()], check=True, capture_output=True, text=True, timeout=120).stdout
    assert f'id="n-input">{stages["integrity"]["counts"]["files"]}<' in dom
    assert 'id="n-boxes">10<' in dom


def test_plugin_serves_reports_and_refuses_path_escape(run_with_stages, monkeypatch, airflow_home):
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    layout, stages, _ = run_with_stages
    build_report(layout, stages, dag_id="secure_pretraining_sanitization", run_id="manual__2026-11-27T00:00:00")
    monkeypatch.setenv("SECURE_DATA_OUTPUT_ROOT", str(layout.root.parents[1]))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    client = TestClient(create_app())  # the real Airflow API app, with our plugin mounted as Airflow does
    base = "/secure-data/reports/secure_pretraining_sanitization"
    ok = client.get(f"{base}/manual__2026-11-27T00:00:00/")
    assert ok.status_code == 200 and "secure-data run report" in ok.text
    assert client.get(f"{base}/other-run/").status_code == 404
    escape = client.get(f"{base}/manual__2026-11-27T00:00:00/..%2F..%2Fintegrity%2Fmanifest.jsonl")
    assert escape.status_code == 404


def test_report_readers_and_triggerers_are_separated_by_auth_manager_roles(run_with_stages, monkeypatch,
                                                                           airflow_home, tmp_path):
    """The simple auth manager (roles viewer < user < op < admin, no per-DAG grants): a viewer may read
    a run's report but not trigger the DAG; an anonymous caller may do neither."""
    import json

    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    layout, stages, _ = run_with_stages
    build_report(layout, stages, dag_id="secure_pretraining_sanitization", run_id="manual__2026-11-27T00:00:00")
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"reader": "reader-pw-1", "runner": "runner-pw-2"}))
    monkeypatch.setenv("SECURE_DATA_OUTPUT_ROOT", str(layout.root.parents[1]))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "reader:viewer,runner:user")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    client = TestClient(create_app())

    def token(user: str, password: str) -> dict[str, str]:
        resp = client.post("/auth/token", json={"username": user, "password": password})
        assert resp.status_code in (200, 201), resp.text
        return {"Authorization": f"Bearer {resp.json()['access_token']}"}

    report = "/secure-data/reports/secure_pretraining_sanitization/manual__2026-11-27T00:00:00/"
    trigger = "/api/v2/dags/secure_pretraining_sanitization/dagRuns"
    assert client.get(report).status_code in (401, 403)
    reader, runner = token("reader", "reader-pw-1"), token("runner", "runner-pw-2")
    assert client.get(report, headers=reader).status_code == 200
    # A body that cannot be valid: the authorization check runs first (403 for a viewer); a "user" passes
    # it and is stopped only by the validation (422), so no run is ever created in the shared test DB.
    invalid = {"logical_date": "not a date"}
    assert client.post(trigger, json=invalid, headers=reader).status_code == 403
    assert client.post(trigger, json=invalid, headers=runner).status_code == 422


def _integrity_with_actions(layout: RunLayout, data: Path, records: list[FileRecord], actions: dict) -> dict:
    path = layout.stage("integrity") / "manifest.jsonl"
    digest = write_manifest(path, {"stage": "integrity", "actions": actions}, records)
    counts = {"files": len(records), "accepted": sum(r.accepted for r in records),
              "quarantined": sum(not r.accepted for r in records)}
    return StageResult("integrity", str(path), digest, counts, str(data), {}).to_xcom()


def test_warnings_are_separated_from_quarantine_reasons_with_a_severity(run_with_stages):
    layout, stages, bad = run_with_stages
    data = Path(stages["integrity"]["data_root"])
    records = [FileRecord(path=r.path, sha256=r.sha256, size=r.size, kind=r.kind) for r in
               [_record(data, p) for p in ("images/train/train_00002.jpg", "images/train/train_00003.jpg")]]
    warned = FileRecord(path=records[0].path, sha256=records[0].sha256, size=records[0].size, kind="image",
                        reasons=(Reason("image_without_label", "no label file", "integrity"),))
    both = records[1].quarantined(Reason("image_without_label", "no label file", "integrity"),
                                  Reason("image.truncated", "JPEG ends before EOI", "integrity"))
    stages = {"integrity": _integrity_with_actions(layout, data, [warned, both],
                                                   {"image_without_label": "warn", "image.truncated": "quarantine"})}
    html = build_report(layout, stages, dag_id="d", run_id="r").read_text()
    quarantine = html.split('id="quarantine"')[1].split("</table>")[0]
    warnings = html.split('id="warnings"')[1].split("</table>")[0]
    assert "image.truncated" in quarantine and warned.path not in quarantine
    assert warned.path in warnings and "image.truncated" not in warnings
    # the warning on the quarantined file is shown as a warning, beside the reason that quarantined it
    assert '<td class="sev-warning">warning</td><td><code>image_without_label' in quarantine
    assert '<td class="sev-quarantine">quarantine</td><td><code>image.truncated' in quarantine
    assert 'id="n-warnings">1<' in html and "Quarantine (1 file(s))" in html


def _record(data: Path, rel: str) -> FileRecord:
    blob = (data / rel).read_bytes()
    return FileRecord(path=rel, sha256=sha256_hex(blob), size=len(blob), kind="image")


def test_tiles_read_what_the_anonymization_stage_writes(run_with_stages):
    layout, stages, _ = run_with_stages
    anon = stages["anonymize"]
    anon["extra"] = {"boxes": 12, "boxes_per_class": {"face": 7, "plate": 3}, "images_per_second": 3.25,
                     "residual_detections": 86, "withheld": 4,
                     "verifiers": [{"name": "centerface", "kind": "centerface"}, "blazeface"]}
    html = build_report(layout, stages, dag_id="d", run_id="r").read_text()
    assert 'id="n-boxes">12<' in html and 'id="n-rate">3.2<' in html
    assert "centerface, blazeface" in html
    # residuals found in images that were withheld: not a failure of a successful run, so not red
    assert 'class="v warn" id="n-residual">86<' in html and "in 4 withheld image(s)" in html
    assert 'id="n-withheld">4<' in html


def test_tiles_show_a_dash_where_a_stage_wrote_nothing(run_with_stages):
    layout, stages, _ = run_with_stages
    stages["anonymize"]["extra"] = {}
    html = build_report(layout, stages, dag_id="d", run_id="r").read_text()
    assert 'id="n-rate">-<' in html and 'id="n-residual">-<' in html and 'id="n-findings">-<' in html
    assert 'id="n-withheld">-<' in html and 'id="verifiers">-<' in html


def test_thumbnails_are_ordered_by_obfuscated_boxes(tmp_path):
    data = make_yolo_dataset(tmp_path / "anonymized", n_train=4, n_val=0, width=120, height=90, seed=2)
    images = sorted(p.relative_to(data).as_posix() for p in (data / "images").rglob("*.jpg"))
    boxes = dict(zip(images, [1, 5, 0, 3], strict=True))
    records = [FileRecord(path=p, sha256=_record(data, p).sha256, size=_record(data, p).size, kind="image",
                          meta={"anonymized_boxes": boxes[p]}) for p in images]
    layout = RunLayout.for_run(tmp_path / "runs", "d", "r")
    stages = {"anonymize": _stage(layout, "anonymize", data, records)}
    html = build_report(layout, stages, dag_id="d", run_id="r").read_text()
    shown = [html.index(f'alt="{p}"') for p in sorted(images, key=lambda p: -boxes[p])]
    assert shown == sorted(shown)
