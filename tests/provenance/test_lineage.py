"""OpenLineage from every stage of the real sanitization DAG (provider listener, file transport).

The run is ``conftest.chain``: dags/secure_pretraining_sanitization.py under ``dag.test`` with the real
OpenBao, GX, Ultralytics and the OpenLineage provider's own listener. Every event it wrote is checked:

* against a JSON schema of the OpenLineage run event (required fields, formats, facet envelope) and by
  re-building it with openlineage-python's own event model (its attrs validators);
* every facet whose JSON schema is shipped in the installed packages (the Airflow facets of
  apache-airflow-providers-openlineage, our ``secureData_*`` facets in secure_data/lineage/schemas)
  against that schema; the standard facets against the facet envelope and their openlineage-python class;
* the lineage graph: source -> integrity -> poisoning -> anonymize -> package, with the counts,
  assertions, findings and anonymization figures the stage XComs hold;
* for secrets: no Vault credential, KV value, token, wrapped or plaintext data key in any event.

openlineage-python 1.54.0 ships no JSON schema of the core spec (checked: its wheel and sdist hold
none), so the core event schema below is written from the spec's required fields.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
SCHEMA_BASE = "https://secure-data.dev/spec/facets/"
STAGES = ("policy", "preflight", "integrity", "poisoning", "anonymize", "anonymize_merge", "handoff", "report")

# The run event and the facet envelope, after the spec's "required" lists (OpenLineage 2-0-2).
_FACET = {"type": "object", "required": ["_producer", "_schemaURL"],
          "properties": {"_producer": {"type": "string", "format": "uri"},
                         "_schemaURL": {"type": "string", "format": "uri"}}}
CORE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SPEC,
    "$defs": {
        "BaseFacet": _FACET,
        "RunFacet": {"$ref": "#/$defs/BaseFacet"},
        "JobFacet": {"allOf": [{"$ref": "#/$defs/BaseFacet"}, {"properties": {"_deleted": {"type": "boolean"}}}]},
        "DatasetFacet": {"allOf": [{"$ref": "#/$defs/BaseFacet"},
                                   {"properties": {"_deleted": {"type": "boolean"}}}]},
        "InputDatasetFacet": {"$ref": "#/$defs/BaseFacet"},
        "OutputDatasetFacet": {"$ref": "#/$defs/BaseFacet"},
        "Dataset": {"type": "object", "required": ["namespace", "name"], "properties": {
            "namespace": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
            "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/DatasetFacet"}},
            "inputFacets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/InputDatasetFacet"}},
            "outputFacets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/OutputDatasetFacet"}}}},
        "RunEvent": {"type": "object", "required": ["eventTime", "producer", "schemaURL", "run", "job"],
                     "properties": {
                         "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
                         "eventTime": {"type": "string", "format": "date-time"},
                         "producer": {"type": "string", "format": "uri"},
                         "schemaURL": {"type": "string", "format": "uri"},
                         "run": {"type": "object", "required": ["runId"], "properties": {
                             "runId": {"type": "string", "format": "uuid"},
                             "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/RunFacet"}}}},
                         "job": {"type": "object", "required": ["namespace", "name"], "properties": {
                             "namespace": {"type": "string"}, "name": {"type": "string"},
                             "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/JobFacet"}}}},
                         "inputs": {"type": "array", "items": {"$ref": "#/$defs/Dataset"}},
                         "outputs": {"type": "array", "items": {"$ref": "#/$defs/Dataset"}}}},
    },
}


def _shipped_schemas() -> dict[str, dict]:
    """JSON schemas the installed packages ship, by file name: the provider's Airflow facets,
    openlineage-integration-common's facets, ours (secure_data/lineage/schemas)."""
    import airflow.providers.openlineage as provider
    import openlineage.common as common

    from secure_data.lineage.facets import SCHEMA_DIR

    files = [*(Path(provider.__file__).parent / "facets").glob("*.json"),
             *(Path(common.__file__).parent / "schema").glob("*.json"), *SCHEMA_DIR.glob("*.json")]
    schemas = {p.name: json.loads(p.read_text()) for p in files}
    for schema in schemas.values():  # "http://json-schema.org/schema#" (some common/ files): "the latest" draft
        if schema.get("$schema") == "http://json-schema.org/schema#":
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schemas


def _facet_index(schemas: dict[str, dict]) -> dict[tuple[str, str], str]:
    """(kind, facet key) -> schema file, from each file's top-level ``properties`` (kind: run/job/dataset)."""
    index = {}
    for name, schema in schemas.items():
        defs = " ".join(schema.get("$defs", {}))
        kind = "run" if "RunFacet" in defs else "job" if "JobFacet" in defs else "dataset"
        for key in schema.get("properties", {}):
            index[(kind, key)] = name
    # openlineage-integration-common 1.54.0 files UnknownSourceAttributeRunFacet under the key "nominalTime"
    # (a copy-paste slip in its schema); the provider emits it as "unknownSourceAttribute".
    if index.get(("run", "nominalTime")) == "unknown-source-attribute-run-facet.json":
        index[("run", "unknownSourceAttribute")] = index.pop(("run", "nominalTime"))
    return index


def _validator_for(schemas: dict[str, dict]):
    import jsonschema
    from referencing import Registry, Resource

    core = Resource.from_contents(CORE)
    registry = Registry().with_resources([(SPEC, core), (SPEC.replace("2-0-2", "1-0-2"), core)])
    for name, schema in schemas.items():
        registry = registry.with_resource(f"urn:shipped:{name}", Resource.from_contents(schema))
    checker = jsonschema.FormatChecker()

    @checker.checks("uri")
    def _uri(value: object) -> bool:
        return not isinstance(value, str) or bool(urlsplit(value).scheme)

    def validate(instance: object, ref: str) -> None:
        jsonschema.Draft202012Validator({"$ref": ref}, registry=registry, format_checker=checker).validate(instance)

    return validate


def _facets(event: dict):
    """(where, key, facet) for every facet of an event."""
    for key, facet in (event["run"].get("facets") or {}).items():
        yield "run", key, facet
    for key, facet in (event["job"].get("facets") or {}).items():
        yield "job", key, facet
    for side in ("inputs", "outputs"):
        for ds in event.get(side) or ():
            for group in ("facets", "inputFacets", "outputFacets"):
                for key, facet in (ds.get(group) or {}).items():
                    yield f"{side}.{group}", key, facet


@pytest.fixture(scope="module")
def events(chain):
    files = sorted(chain.events.iterdir())
    out = [json.loads(p.read_text()) for p in files]
    assert out, f"no OpenLineage event written to {chain.events}"
    return out


def _task_events(events, task_id: str, event_type: str = "COMPLETE") -> list[dict]:
    return [e for e in events if e.get("eventType") == event_type
            and e["job"]["name"].endswith(f".{task_id}")]


def test_the_chain_ran_and_every_stage_emitted_start_and_complete(chain, events):
    assert chain.dag_run.state == "success"
    for task in STAGES:
        assert _task_events(events, task, "START"), task
        assert _task_events(events, task, "COMPLETE"), task
    assert all(e["job"]["namespace"] == "secure-data-test" for e in events)
    # Every secure-data operator answers for itself: none falls back to the provider's "unknown operator" facet.
    unknown = [i["name"] for e in events for i in e["run"]["facets"].get("unknownSourceAttribute", {})
               .get("unknownItems", [])]
    assert not [name for name in unknown if name.endswith("Operator") and name != "_PythonDecoratedOperator"], unknown


def test_every_event_and_every_facet_validates(events):
    import jsonschema
    from openlineage.client import event_v2

    schemas = _shipped_schemas()
    validate = _validator_for(schemas)
    index = _facet_index(schemas)
    provider_deviations: set[str] = set()
    by_schema = {"shipped": 0, "envelope": 0}
    for event in events:
        validate(event, f"{SPEC}#/$defs/RunEvent")
        # openlineage-python's own model accepts it (runId uuid, eventTime, job, datasets).
        event_v2.RunEvent(
            eventType=event_v2.RunState(event["eventType"]), eventTime=event["eventTime"],
            run=event_v2.Run(runId=event["run"]["runId"]),
            job=event_v2.Job(namespace=event["job"]["namespace"], name=event["job"]["name"]),
            producer=event["producer"],
            inputs=[event_v2.InputDataset(namespace=d["namespace"], name=d["name"]) for d in event.get("inputs", [])],
            outputs=[event_v2.OutputDataset(namespace=d["namespace"], name=d["name"])
                     for d in event.get("outputs", [])])
        for where, key, facet in _facets(event):
            validate(facet, f"{SPEC}#/$defs/BaseFacet")  # the envelope: _producer, _schemaURL
            kind = "run" if where == "run" else "job" if where == "job" else "dataset"
            shipped = index.get((kind, key))
            if shipped:
                try:
                    schema_key = "nominalTime" if shipped.startswith("unknown-source-attribute") else key
                    validate({schema_key: facet}, f"urn:shipped:{shipped}")
                except jsonschema.ValidationError as exc:
                    if key.startswith("secureData_"):
                        raise
                    provider_deviations.add(f"{key}: {exc.message}")
                by_schema["shipped"] += 1
            else:
                by_schema["envelope"] += 1
            if key.startswith("secureData_"):
                assert shipped and facet["_schemaURL"].startswith(SCHEMA_BASE), (where, key)
    # The provider's own "airflow" run facet under dag.test has no taskInstance.pool, which the provider's
    # schema requires (a scheduler-run task has one): the only deviation tolerated, and not in our facets.
    assert provider_deviations <= {"airflow: 'pool' is a required property"}, provider_deviations
    tasks = sum(1 for e in events if e["eventType"] == "COMPLETE" and e["run"]["facets"].get("airflow"))
    assert by_schema["shipped"] >= tasks + 10, by_schema  # the Airflow run facet of every task event, and ours


def test_custom_facet_schemas_reject_a_wrong_facet(events):
    import jsonschema

    validate = _validator_for(_shipped_schemas())
    facet = next(f for e in events for _, k, f in _facets(e) if k == "secureData_counts")
    broken = {**facet, "accepted": "many"}
    validate(facet, "urn:shipped:SecureDataCountsRunFacet.json#/$defs/SecureDataCountsRunFacet")  # control
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, "urn:shipped:SecureDataCountsRunFacet.json#/$defs/SecureDataCountsRunFacet")


def _complete(events, task_id: str) -> dict:
    (event,) = _task_events(events, task_id)[-1:]
    return event


def test_datasets_chain_source_to_package(chain, events):
    from secure_data.handoff.package import package_path

    def ids(datasets):
        return [(d["namespace"], d["name"]) for d in datasets]

    integrity, poisoning = _complete(events, "integrity"), _complete(events, "poisoning")
    merge, handoff = _complete(events, "anonymize_merge"), _complete(events, "handoff")
    assert ids(integrity["inputs"]) == [("file", str(chain.source))]
    # each stage's output is the next stage's input: one connected graph in Marquez or a catalog
    assert ids(poisoning["inputs"]) == ids(integrity["outputs"])
    assert ids(merge["inputs"]) == ids(poisoning["outputs"])
    assert ids(handoff["inputs"]) == ids(merge["outputs"])
    package = package_path(chain.xcom["handoff"]["extra"]["package_uri"])
    assert ids(handoff["outputs"]) == [("file", str(package))]
    report = _complete(events, "report")
    assert ids(report["outputs"]) == [("file", str(Path(chain.xcom["report"]["report_path"]).parent))]


def test_counts_assertions_findings_and_anonymization_figures(chain, events):
    integrity = _complete(events, "integrity")
    counts = integrity["run"]["facets"]["secureData_counts"]
    xcom = chain.xcom["integrity"]["counts"]
    assert (counts["input"], counts["accepted"], counts["quarantined"]) == (
        xcom["files"], xcom["accepted"], xcom["quarantined"])
    assert counts["accepted"] + counts["quarantined"] == counts["input"]
    assert counts["quarantineReasons"].get("not_an_image") == 1
    assertions = integrity["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    gx = [a for a in assertions if a.get("severity") == "great_expectations"]
    assert gx and all(isinstance(a["success"], bool) for a in gx)  # Great Expectations results, one per expectation
    assert any(a["assertion"] == "not_an_image" and a["success"] is False and a["actual"] == "1" for a in assertions)
    assert any(a["assertion"] == "accepted_plus_quarantined_equals_input" and a["success"] for a in assertions)
    assert integrity["inputs"][0]["inputFacets"]["dataQualityMetrics"]["rowCount"] == xcom["files"]

    poisoning = _complete(events, "poisoning")
    findings = poisoning["run"]["facets"]["secureData_poisoning"]
    assert findings["findingsByCheck"] == chain.xcom["poisoning"]["extra"]["findings_by_check"]
    assert findings["findingsDigest"] == chain.xcom["poisoning"]["extra"]["findings_digest"]

    merge = _complete(events, "anonymize_merge")
    figures = merge["run"]["facets"]["secureData_anonymization"]
    extra = chain.xcom["anonymize_merge"]["extra"]
    assert figures["boxes"] == extra["boxes"] > 0
    assert figures["residualDetections"] == extra["residual_detections"]
    assert figures["models"] and all(len(sha) == 64 for sha in figures["models"].values())
    assert figures["verifiers"] == [v["name"] for v in extra.get("verifiers") or ()]  # the demo policy has none
    for model in [*(extra.get("detectors") or ()), *(extra.get("verifiers") or ())]:
        assert figures["models"][model["name"]] == model["sha256"]  # every model by its pinned hash
    residual = merge["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert {a["assertion"] for a in residual} == {"no_protected_class_after_first_pass",
                                                  "no_protected_class_after_last_pass"}
    shards = _task_events(events, "anonymize")
    assert sum(e["run"]["facets"]["secureData_anonymization"]["images"] for e in shards) == extra["images"]

    package = _complete(events, "handoff")["run"]["facets"]["secureData_package"]
    handoff = chain.xcom["handoff"]["extra"]
    assert package["manifestDigest"] == handoff["manifest_digest"]
    assert package["provenanceDigest"] == handoff["provenance_digest"]
    assert package["signatures"]["model_signing"]["key_name"] == "secure-data-attestation"
    policy = _complete(events, "policy")["run"]["facets"]["secureData_policy"]
    assert policy["policyDigest"] == chain.xcom["policy"]["policy_digest"]
    preflight = _complete(events, "preflight")["run"]["facets"]["secureData_preflight"]
    assert preflight["role"] == "sanitizer" and preflight["canSign"] and not preflight["canDecrypt"]


def test_no_secret_in_any_event(chain, openbao, vault, events):
    import hvac

    from secure_data.handoff.package import package_path, read_header

    root = hvac.Client(url=openbao.url, token=openbao.root_token)
    header = read_header(package_path(chain.xcom["handoff"]["extra"]["package_uri"]))
    key_b64 = root.secrets.transit.decrypt_data(name=header.data_key.key_name, ciphertext=header.data_key.wrapped,
                                                mount_point="transit")["data"]["plaintext"]
    key = base64.b64decode(key_b64)
    needles = {"root token": openbao.root_token, "wrapped data key": header.data_key.wrapped,
               "data key (base64)": key_b64, "data key (hex)": key.hex()}
    for role in vault.roles:
        needles[f"{role.role} secret_id"] = role.secret_id
        needles[f"{role.role} role_id"] = role.role_id
    for path in vault.secret_paths:  # the KV values bootstrap wrote (dataset credentials)
        data = root.secrets.kv.v2.read_secret_version(path=path, mount_point=vault.kv_mount,
                                                      raise_on_deleted_version=True)["data"]["data"]
        needles.update({f"kv {path}:{k}": str(v) for k, v in data.items()})
    text = "\n".join(p.read_text() for p in sorted(chain.events.iterdir()))
    assert header.data_key.wrapped.startswith("vault:v") and len(key) == 32  # control: the needles are real
    leaks = [name for name, needle in needles.items() if needle and needle in text]
    assert leaks == []
    assert key not in text.encode()


def test_lineage_costs_nothing_without_the_provider_configured(chain):
    """Without a transport the provider stays disabled: the mixin only keeps the XCom value."""
    from secure_data.lineage.mixin import OpenLineageMixin
    from secure_data.operators.integrity import IntegrityOperator

    assert issubclass(IntegrityOperator, OpenLineageMixin)
    from airflow.providers.openlineage import conf

    for value in vars(conf).values():
        getattr(value, "cache_clear", lambda: None)()
    assert conf.is_disabled()  # the chain's transport was removed with its env after the run


def test_dataset_names_follow_the_naming_spec_and_drop_credentials():
    from secure_data.lineage.facets import dataset_name

    assert dataset_name("/data/raw") == ("file", "/data/raw")
    assert dataset_name("file:///data/run%2B1/pkg") == ("file", "/data/run+1/pkg")
    assert dataset_name("s3://AKIDEXAMPLE:s3cr3t@bucket/prefix/set?X-Amz-Signature=abc") == ("s3://bucket",
                                                                                              "prefix/set")
    assert dataset_name("s3a://bucket/p") == ("s3://bucket", "p")


def test_consumer_and_failed_tasks_report_their_datasets():
    from secure_data.lineage.facets import operator_lineage
    from secure_data.operators.handoff import PackageConsumerOperator

    consumer = PackageConsumerOperator(task_id="train", python_callable=lambda package: None,
                                       package_uri="file:///packages/p-1")
    done = operator_lineage(consumer, {"package_uri": "file:///packages/p-1", "result": {"secret": "x"}}, failed=False)
    assert [(d.namespace, d.name) for d in done.inputs] == [("file", "/packages/p-1")] and not done.run_facets
    # A failed poisoning task: its input (from the rendered upstream XCom), no counts.
    stage = type("PoisoningOperator", (), {"upstream": {"manifest_path": "/runs/r/integrity/manifest.jsonl"}})()
    failed = operator_lineage(stage, None, failed=True)
    assert [(d.namespace, d.name) for d in failed.inputs] == [("file", "/runs/r/integrity")]
    assert failed.outputs == [] and failed.run_facets == {}


def test_operators_and_dags_load_no_openlineage_code():
    """What the mixin costs at import: nothing. Importing every operator module and parsing the DAGs loads
    neither our facet module nor the OpenLineage client (so neither needs to be installed)."""
    import subprocess
    import sys

    from secure_data_testkit.airflow_env import REPO_ROOT

    code = (
        "import importlib, pkgutil, sys, secure_data.operators as ops\n"
        "for m in pkgutil.iter_modules(ops.__path__):\n"
        "    importlib.import_module('secure_data.operators.' + m.name)\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO_ROOT / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print('LOADED=' + ','.join(sorted(m for m in sys.modules if m.startswith(('openlineage', "
        "'secure_data.lineage.facets')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    (loaded,) = [line for line in out.stdout.splitlines() if line.startswith("LOADED=")]
    assert loaded == "LOADED=", loaded
