"""The whole chain under a real Airflow (API server, scheduler, DAG processor, triggerer; LocalExecutor; SQLite)
against a real OpenBao seeded with the policy bundle: trigger form, refusal of bad params, the sanitization run,
the Asset-triggered training run, and the report served by the plugin."""

from __future__ import annotations

import json
import urllib.request

import pytest

from secure_data.testing.airflow_stack import AirflowStackError
from secure_data.testing.demo import SANITIZE_DAG, TRAIN_DAG, DemoServices, make_demo_dataset, run_chain

pytestmark = pytest.mark.slow

FORM_FIELDS = {
    "source": "Source", "reference_manifest": "Source", "model_path": "Anonymization",
    "model_sha256": "Anonymization", "classes": "Anonymization", "mode": "Anonymization",
    "confidence": "Anonymization", "shard_size": "Anonymization", "duplicates_policy": "Checks and policies",
    "gx_policy": "Checks and policies", "trigger_policy": "Checks and policies",
}


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    with DemoServices(workdir=tmp_path_factory.mktemp("e2e"), log=lambda m: print(f"[e2e] {m}")) as svc:
        yield svc


@pytest.fixture(scope="module")
def chain(services, tmp_path_factory):
    source = make_demo_dataset(tmp_path_factory.mktemp("src") / "dataset", n_train=6, n_val=3)
    summary = run_chain(services, source, conf={"shard_size": 5}, timeout=900)
    return source, summary


def test_trigger_form_exposes_typed_documented_params(services):
    details = services.stack.api("GET", f"/api/v2/dags/{SANITIZE_DAG}/details")
    params = details["params"]
    for name, section in FORM_FIELDS.items():
        schema = params[name]["schema"]
        assert schema.get("title"), name
        assert schema.get("section") == section, (name, schema)
    assert params["mode"]["schema"]["enum"] == ["pixelate", "blur", "fill"]
    assert params["gx_policy"]["schema"]["enum"] == ["fail", "warn", "quarantine"]
    assert params["model_sha256"]["schema"]["pattern"] == "^[0-9a-f]{64}$"
    assert details["doc_md"] and "Secure pre-training sanitization" in details["doc_md"]


@pytest.mark.parametrize("bad_conf, needle", [
    ({"mode": "smudge"}, "smudge"),
    ({"confidence": 7}, "confidence"),
    ({"model_sha256": "not-a-digest"}, "model_sha256"),
])
def test_bad_param_is_refused_at_trigger_time_with_a_readable_message(services, bad_conf, needle):
    before = len(services.stack.runs(SANITIZE_DAG))
    with pytest.raises(AirflowStackError) as err:
        services.stack.trigger(SANITIZE_DAG, {"source": "/nowhere", **bad_conf})
    message = str(err.value)
    assert "HTTP 400" in message and needle in message
    assert len(services.stack.runs(SANITIZE_DAG)) == before  # nothing was queued


def test_chain_runs_and_training_consumes_the_package(chain):
    source, summary = chain
    assert summary["sanitize_state"] == "success", summary
    assert summary["training_state"] == "success", summary
    assert summary["ok"] and summary["trained_package_id"] == summary["package_id"]
    files_on_disk = sum(1 for p in source.rglob("*") if p.is_file())
    assert summary["input"] == files_on_disk
    assert summary["accepted"] + summary["quarantined"] == summary["input"]
    assert summary["boxes_obfuscated"] > 0


def test_asset_event_carries_only_non_secret_metadata(services, chain):
    _, summary = chain
    events = services.stack.api("GET", "/api/v2/assets/events?order_by=-timestamp")["asset_events"]
    extra = next(e["extra"] for e in events if e["extra"].get("package_id") == summary["package_id"])
    assert extra["package_uri"] == summary["package_uri"]
    text = json.dumps(extra)
    assert services.creds.sanitizer.secret_id not in text and services.creds.trainer.secret_id not in text
    assert not ({"plaintext", "data_key", "secret_id", "token"} & set(extra))


def test_report_is_served_by_the_plugin_through_the_api_server(services, chain):
    _, summary = chain
    with urllib.request.urlopen(summary["report_url"], timeout=30) as resp:
        html = resp.read().decode()
    assert "secure-data run report" in html
    assert f'id="n-input">{summary["input"]}<' in html
    runs = services.stack.runs(TRAIN_DAG)
    assert any(r["dag_run_id"] == summary["training_run_id"] for r in runs)
