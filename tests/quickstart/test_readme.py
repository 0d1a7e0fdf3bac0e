"""The README's quick-start DAGs, extracted from README.md and run as written under ``dag.test``.

The sanitization DAG (``sanitize_dataset``) runs once against the session's real OpenBao (sanitizer AppRole
as the ``vault_sanitizer`` connection, the default), the demo detector and deployment policy; the training
DAG (``package_consumer``) then opens the package it published with the trainer identity. So the README
cannot drift from the code: a renamed argument, a wrong default connection id or a config the parse-time
check refuses fails here.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from secure_data_testkit.airflow_env import REPO_ROOT, register_dag

MARKER = re.compile(r"<!-- quickstart:(\w+) -->\n```python\n(.*?)```", re.S)


def readme_blocks() -> dict[str, str]:
    return dict(MARKER.findall((REPO_ROOT / "README.md").read_text(encoding="utf-8")))


def _xcom(airflow_home, dag_id: str, run_id: str) -> dict[str, object]:
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute("select task_id, value from xcom where dag_id=? and run_id=? and key='return_value' "
                          "and map_index=-1", (dag_id, run_id)).fetchall()
    return {task: json.loads(value) for task, value in rows}


def _parse(path):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(path))


@pytest.fixture(scope="module")
def deployment(openbao, airflow_home, tmp_path_factory):
    """The README's two DAG files in a DAG folder, and a worker environment: both Vault identities under
    their default connection ids, the demo detector + real face models, the demo deployment policy."""
    from secure_data_testkit.demo import make_demo_dataset, model_env, write_demo_policy
    from secure_data_testkit.models import demo_detector
    from secure_data_testkit.vault_fixtures import vault_connection_env

    blocks = readme_blocks()
    work = tmp_path_factory.mktemp("quickstart")
    dags = work / "dags"
    dags.mkdir()
    for name, code in blocks.items():
        (dags / f"{name}.py").write_text(code, encoding="utf-8")
    model_path, model_sha = demo_detector()
    env = {
        **vault_connection_env(openbao, "sanitizer"),
        **vault_connection_env(openbao, "trainer"),
        **model_env({"model_path": str(model_path), "model_sha256": model_sha}),
        "SECURE_DATA_POLICY_FILE": str(write_demo_policy(work / "policy.yaml")),
        "SECURE_DATA_OUTPUT_ROOT": str(work / "runs"),
        "SECURE_DATA_PACKAGE_ROOT": str(work / "packages"),
    }
    patch = pytest.MonkeyPatch()
    for name, value in env.items():
        patch.setenv(name, value)
    try:
        source = make_demo_dataset(work / "street-scenes", n_train=4, n_val=2, include_real_photos=False)
        yield SimpleNamespace(dags=dags, work=work, source=source, blocks=blocks)
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def sanitized(deployment, airflow_home):
    bag = _parse(deployment.dags / "sanitize.py")
    assert bag.import_errors == {}
    dag = bag.get_dag("sanitize_street_scenes")
    register_dag(dag)  # dag.test() needs it serialized; the README's folder is in no bundle
    run = dag.test(run_conf={"source": str(deployment.source)})
    return SimpleNamespace(run=run, xcom=_xcom(airflow_home, dag.dag_id, run.run_id))


def test_readme_has_both_quickstart_dags():
    blocks = readme_blocks()
    assert set(blocks) == {"sanitize", "train"}, set(blocks)
    assert "sanitize_dataset(SanitizeConfig(" in blocks["sanitize"]
    assert "@package_consumer(" in blocks["train"]


def _package_events(airflow_home) -> list[dict]:
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        return [json.loads(e) for (e,) in db.execute(
            "select e.extra from asset_event e join asset a on a.id = e.asset_id where a.uri = ? order by e.id",
            ("secure-data://packages/street_scenes",))]


def test_sanitization_quickstart_publishes_a_package_on_its_own_asset(sanitized, deployment, airflow_home):
    assert sanitized.run.state == "success", sanitized.run.state
    counts = sanitized.xcom["sanitize.integrity"]["counts"]
    files = sum(1 for p in deployment.source.rglob("*") if p.is_file())
    assert counts["files"] == files and counts["accepted"] + counts["quarantined"] == files, counts
    event = _package_events(airflow_home)[-1]  # the dataset's own Asset, not the example DAG's
    assert event["package_id"].startswith("street_scenes-"), event
    assert (deployment.work / "packages" / event["package_id"] / "manifest.jsonl").is_file()
    assert sanitized.xcom["sanitize.report"]["report_path"].endswith("index.html")


def test_training_quickstart_opens_the_package_with_the_trainer_identity(sanitized, deployment, airflow_home):
    event = _package_events(airflow_home)[-1]
    bag = _parse(deployment.dags / "train.py")
    assert bag.import_errors == {}
    dag = bag.get_dag("train_street_scenes")
    register_dag(dag)
    assert [a.uri for a in dag.timetable.asset_condition.objects] == ["secure-data://packages/street_scenes"]
    assert dag.get_task("train").asset.uri == "secure-data://packages/street_scenes"
    run = dag.test(run_conf={"package_uri": event["package_uri"], "package_id": event["package_id"]})
    assert run.state == "success"
    out = _xcom(airflow_home, dag.dag_id, run.run_id)["train"]
    assert out["package_id"] == event["package_id"] and out["manifest_digest"] == event["manifest_digest"]
    anonymized = Path(sanitized.xcom["sanitize.anonymize_merge"]["data_root"]) / "images" / "train"
    train_images = sum(1 for p in anonymized.iterdir() if p.is_file())
    assert train_images > 0 and out["result"] == {"train_images": train_images, "epochs": 3}, out


def test_a_bad_quickstart_config_is_an_import_error_of_the_dag_file(deployment, tmp_path):
    """Parse-time validation: a typo in a policy key, a weaker request than the deployment policy."""
    code = deployment.blocks["sanitize"]
    for old, new, needle in [('"gx_policy"', '"gx_polcy"', "unknown integrity keys ['gx_polcy']"),
                             ('"box_padding": 0.2', '"box_padding": 0.01', "box padding"),
                             ('"drift_policy": "warn"', '"drift_policy": "ignore"', "'ignore'")]:
        assert old in code
        path = tmp_path / f"bad_{len(needle)}.py"
        path.write_text(code.replace(old, new), encoding="utf-8")
        errors = _parse(path).import_errors
        assert len(errors) == 1 and needle in next(iter(errors.values())), (needle, errors)
