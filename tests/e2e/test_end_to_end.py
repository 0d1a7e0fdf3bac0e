"""The whole chain under a real Airflow (API server, scheduler, DAG processor, triggerer; LocalExecutor; SQLite)
against a real OpenBao seeded with the policy bundle: trigger form, refusal of bad params, the sanitization run,
the Asset-triggered training run, and the report served by the plugin."""

from __future__ import annotations

import json
import urllib.request

import pytest

from secure_data_testkit.airflow_stack import AirflowStackError
from secure_data_testkit.demo import (
    SANITIZE_DAG,
    TRAIN_DAG,
    DemoServices,
    labelled_coverage,
    make_demo_dataset,
    run_chain,
)

pytestmark = pytest.mark.slow

FORM_FIELDS = {
    "source": "Source", "reference_manifest": "Source", "reference_digest": "Source",
    "classes": "Anonymization", "mode": "Anonymization",
    "confidence": "Anonymization", "shard_size": "Anonymization", "duplicates_policy": "Checks and policies",
    "gx_policy": "Checks and policies", "trigger_policy": "Checks and policies",
}


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    with DemoServices(workdir=tmp_path_factory.mktemp("e2e"), log=lambda m: print(f"[e2e] {m}")) as svc:
        yield svc


CANARY_PATH = "secure-data/datasets/canary"
CANARIES = {"access_key_id": "CANARYAKID7Q3ZX9", "secret_access_key": "canary-secret-5d1f0c8e9b2a47f3"}


@pytest.fixture(scope="module")
def chain(services, tmp_path_factory):
    import hvac

    # A recognisable credential the run must read (storage_secret) and must never write anywhere.
    root = hvac.Client(url=services.bao.url, token=services.bao.root_token)
    root.secrets.kv.v2.create_or_update_secret(path=CANARY_PATH, secret=CANARIES, mount_point="secret")
    source = make_demo_dataset(tmp_path_factory.mktemp("src") / "dataset", n_train=6, n_val=3,
                               real_faces=("orig_t1",))
    summary = run_chain(services, source, conf={"shard_size": 5, "storage_secret": CANARY_PATH}, timeout=900)
    return source, summary


def test_trigger_form_exposes_typed_documented_params(services):
    details = services.stack.api("GET", f"/api/v2/dags/{SANITIZE_DAG}/details")
    params = details["params"]
    for name, section in FORM_FIELDS.items():
        schema = params[name]["schema"]
        assert schema.get("title"), name
        assert schema.get("section") == section, (name, schema)
    assert params["mode"]["schema"]["enum"] == ["blur", "pixelate", "fill"]
    assert params["gx_policy"]["schema"]["enum"] == ["fail", "warn", "quarantine"]
    assert not {"model_path", "model_sha256", "face_model_path", "vault_conn_id"} & set(params)  # deployment only
    assert params["confidence"]["schema"]["maximum"] == 0.5  # the demo deployment policy's ceiling
    assert details["doc_md"] and "Secure pre-training sanitization" in details["doc_md"]


@pytest.mark.parametrize("bad_conf, needle", [
    ({"mode": "smudge"}, "smudge"),
    ({"confidence": 7}, "confidence"),
    ({"reference_digest": "not-a-digest"}, "reference_digest"),
    # weaker than the deployment policy (issue 13): refused by the API before a run exists
    ({"confidence": 0.99}, "0.99 is greater than the maximum of 0.5"),
    ({"verify_confidence": 0.99}, "verify_confidence"),
    ({"max_passes": 0}, "max_passes"),
    ({"classes": ["plate"]}, "classes"),
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


def _needles(services, summary) -> dict[str, bytes]:
    """Every secret of the run, in the encodings it could leak in: KV canaries, AppRole secret_ids, and
    the package's plaintext data key (unwrapped here with the root token: raw, base64 and hex)."""
    import base64
    from pathlib import Path
    from urllib.parse import urlsplit

    import hvac

    header = json.loads((Path(urlsplit(summary["package_uri"]).path) / "header.json").read_text())
    root = hvac.Client(url=services.bao.url, token=services.bao.root_token)
    wrapped = header["data_key"]["wrapped"]
    key_b64 = root.secrets.transit.decrypt_data(name=header["data_key"]["key_name"], ciphertext=wrapped,
                                                mount_point="transit")["data"]["plaintext"]
    key = base64.b64decode(key_b64)
    assert len(key) == 32
    needles = {f"kv:{k}": v.encode() for k, v in CANARIES.items()}
    needles |= {"sanitizer secret_id": services.creds.sanitizer.secret_id.encode(),
                "trainer secret_id": services.creds.trainer.secret_id.encode(),
                "data key (raw)": key, "data key (base64)": key_b64.encode(), "data key (hex)": key.hex().encode()}
    return needles


def test_no_secret_reaches_logs_xcom_assets_rendered_fields_files_or_report(services, chain):
    """Full chain, then scan every task log, the metadata DB (XCom, rendered template fields, Asset event
    extras, conf), the run folders, the report and the package for the canaries and the plaintext data key."""
    import sqlite3

    _, summary = chain
    assert summary["ok"], summary
    needles = _needles(services, summary)
    home = services.stack.home
    # The run really read the canary secret (else this test proves nothing): preflight lists its version.
    preflight = services.stack.xcom(SANITIZE_DAG, summary["sanitize_run_id"], "preflight")
    assert CANARY_PATH in json.dumps(preflight)
    logs = [p for p in (home / "logs").rglob("*") if p.is_file()]
    assert any("integrity" in str(p) for p in logs), "no task logs found to scan"
    scanned = logs + [p for root in (services.output_root, services.workdir / "packages")
                      for p in root.rglob("*") if p.is_file()]
    hits = [(name, str(p)) for p in scanned for name, needle in needles.items() if needle in p.read_bytes()]
    assert hits == []
    con = sqlite3.connect(home / "airflow.db")
    tables = ["xcom", "rendered_task_instance_fields", "asset_event", "dag_run", "task_instance", "log"]
    for table in tables:
        rows = con.execute(f"select * from {table}").fetchall()  # noqa: S608 (fixed table names)
        blob = repr(rows).encode()
        assert not [name for name, needle in needles.items() if needle in blob], table
    # The report, as served through the API server, too.
    with urllib.request.urlopen(summary["report_url"], timeout=30) as resp:
        page = resp.read()
    assert not [name for name, needle in needles.items() if needle in page]


def test_bad_input_corpus_through_the_whole_chain_under_the_scheduler(services, tmp_path_factory):
    """The bad-input corpus (80 kinds, tests/reliability) mixed into a real dataset, run through every stage
    by the real scheduler: the run succeeds, every bad file is quarantined (or warned) as expected, every good
    generated file reaches the signed package, and input = accepted + quarantined."""
    from pathlib import Path
    from urllib.parse import urlsplit

    from secure_data.dataset.manifest import read_manifest
    from secure_data_testkit.badinputs import count_entries, inject_bad_inputs, unlock

    root = make_demo_dataset(tmp_path_factory.mktemp("bad") / "dataset", n_train=6, n_val=3,
                             include_real_photos=False, seed=5)
    good = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    bad = inject_bad_inputs(root, seed=0)
    assert len({b.kind for b in bad}) >= 30
    n_entries = count_entries(root)
    try:
        summary = run_chain(services, root, conf={"shard_size": 500}, timeout=900)
    finally:
        unlock(root)
    assert summary["sanitize_state"] == "success", summary
    assert summary["training_state"] == "success" and summary["ok"], summary
    assert summary["input"] == n_entries
    assert summary["accepted"] + summary["quarantined"] == summary["input"]
    final = services.stack.xcom(SANITIZE_DAG, summary["sanitize_run_id"], "anonymize_merge")
    records = read_manifest(final["manifest_path"], expected_digest=final["manifest_digest"]).by_path()
    for item in bad:
        for exp in item.expectations:
            if exp.outcome == "quarantined" and exp.path in records:
                assert not records[exp.path].accepted, (item.kind, exp.path)
    package_manifest = Path(urlsplit(summary["package_uri"]).path) / "manifest.jsonl"
    packaged = {json.loads(line)["path"] for line in package_manifest.read_text().splitlines()[1:] if line}
    # Every accepted file, plus the effective deployment policy the hand-off signs into the package.
    assert packaged == {p for p, r in records.items() if r.accepted} | {"secure-data-policy.json"}
    assert good - {"data.yaml"} <= packaged, sorted(good - packaged)[:5]


def test_every_labelled_face_and_plate_is_obfuscated_and_faces_are_verified_independently(chain):
    """Label-guided protection on a real run: every labelled box (drawn faces/plates and the six real faces
    of InsightFace's t1.jpg) is blurred in the published dataset or its image withheld, judged from the
    pixels; faces are re-checked by BlazeFace, a family the detectors (YOLO, CenterFace) do not share."""
    from pathlib import Path

    source, summary = chain
    coverage = labelled_coverage(source, Path(summary["anonymized_root"]))
    assert coverage["boxes"] >= 6 + 9, coverage
    assert coverage["covered"] + coverage["withheld_boxes"] == coverage["boxes"], coverage
    assert "blazeface" in summary["verifiers"], summary
