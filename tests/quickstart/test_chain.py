"""``sanitize_dataset`` and ``package_consumer`` at DAG-parse time: wiring, deployment defaults, refusals.

No run here (tests/quickstart/test_readme.py runs both under ``dag.test``): these build DAG objects only.
"""

from __future__ import annotations

import pendulum
import pytest


def _dag(dag_id: str):
    from airflow.sdk import DAG

    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
               render_template_as_native_obj=True)


def test_sanitize_dataset_wires_the_chain_with_deployment_defaults(monkeypatch):
    from secure_data.chain import SanitizeConfig, sanitize_dataset

    monkeypatch.setenv("SECURE_DATA_SANITIZER_VAULT_CONN_ID", "vault_site_sanitizer")
    monkeypatch.setenv("SECURE_DATA_GPU_QUEUE", "gpu")
    with _dag("chain_wiring") as dag:
        sanitize_dataset(SanitizeConfig(name="street_scenes", source="{{ params.source }}",
                                        storage_secret="secure-data/datasets/street-scenes"),  # noqa: S106
                         group_id="street")
    tasks = dag.task_dict
    assert set(tasks) == {f"street.{t}" for t in ("policy", "preflight", "integrity", "poisoning", "plan_shards",
                                                    "anonymize", "anonymize_merge", "handoff", "report",
                                                    "fail_if_a_stage_failed")}
    assert tasks["street.preflight"].upstream_task_ids == {"street.policy"}
    assert tasks["street.integrity"].upstream_task_ids == {"street.preflight"}
    assert tasks["street.report"].upstream_task_ids == {"street.handoff"}
    assert tasks["street.fail_if_a_stage_failed"].upstream_task_ids == set(tasks) - {"street.fail_if_a_stage_failed"}
    for task_id in ("street.preflight", "street.integrity", "street.handoff"):
        assert tasks[task_id].vault_conn_id == "vault_site_sanitizer", task_id
    assert tasks["street.preflight"].secret_paths == ["secure-data/datasets/street-scenes"]
    assert tasks["street.anonymize"].partial_kwargs["queue"] == "gpu"
    assert [a.uri for a in tasks["street.handoff"].outlets] == ["secure-data://packages/street_scenes"]
    assert tasks["street.handoff"].package_name == "street_scenes"
    assert tasks["street.report"].stage_task_ids == {"integrity": "street.integrity", "poisoning": "street.poisoning",
                                                     "anonymize": "street.anonymize_merge",
                                                     "handoff": "street.handoff"}


@pytest.mark.parametrize("kwargs, needle", [
    ({"source": ""}, "source is required"),
    ({"source": "/d", "name": "Street Scenes"}, "name 'Street Scenes'"),
    ({"source": "/d", "reference_manifest": "/m.jsonl"}, "reference_manifest and reference_digest go together"),
    ({"source": "/d", "reference_manifest": "/m.jsonl", "reference_digest": "md5:1"}, "is not sha256"),
    ({"source": "/d", "shard_size": 0}, "shard_size 0"),
    ({"source": "/d", "integrity": {"max_pixel": 1}}, "unknown integrity keys ['max_pixel']"),
    ({"source": "/d", "poisoning": {"backbone_model": "/m.pt"}}, "comes from the deployment policy only"),
    ({"source": "/d", "anonymize": {"model_path": "/m.pt"}}, "models and their pins come from the deployment"),
    ({"source": "/d", "anonymize": {"mode": "smudge"}}, "'smudge' is not allowed"),
])
def test_a_config_that_cannot_run_is_refused_when_it_is_built(kwargs, needle):
    from secure_data.chain import SanitizeConfig, SanitizeConfigError

    with pytest.raises(SanitizeConfigError, match="sanitize_dataset") as err:
        SanitizeConfig(**kwargs)
    assert needle in str(err.value)


def test_templated_values_are_left_to_the_worker():
    from secure_data.chain import SanitizeConfig

    config = SanitizeConfig(source="{{ params.source }}", shard_size="{{ params.shard_size }}",
                            integrity={"gx_policy": "{{ params.gx_policy }}"},
                            anonymize={"confidence": "{{ params.confidence }}"})
    assert config.package_asset.uri == "secure-data://packages/sanitized"
    assert config.replace(name="other").package_asset.uri == "secure-data://packages/other"


def test_package_consumer_uses_the_trainer_deployment_anchors(monkeypatch):
    from airflow.sdk import DAG

    from secure_data.assets import package_asset
    from secure_data.operators.consumer import package_consumer

    monkeypatch.setenv("SECURE_DATA_TRAINER_VAULT_CONN_ID", "vault_site_trainer")
    monkeypatch.setenv("SECURE_DATA_SIGNING_KEY", "site-signing")

    @package_consumer("street_scenes", retries=0)
    def fit(package, epochs: int = 1) -> dict:
        return {"epochs": epochs}

    with DAG("consumer_defaults", schedule=[package_asset("street_scenes")],
             start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        op = fit(epochs=2)
    assert op.task_id == "fit" and op.python_callable.__name__ == "fit" and op.op_kwargs == {"epochs": 2}
    assert op.vault_conn_id == "vault_site_trainer" and op.signing_key == "site-signing"
    assert op.allowed_policy_digests == "deployment" and op.retries == 0
    assert op.asset.uri == "secure-data://packages/street_scenes" and op.inlets == [op.asset]


def test_parsing_the_readme_dags_imports_no_heavy_library(tmp_path):
    """The DAG processor parses these files: the config checks must stay light (no torch, GX, OpenCV...)."""
    import re
    import subprocess
    import sys

    from secure_data_testkit.airflow_env import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = dict(re.findall(r"<!-- quickstart:(\w+) -->\n```python\n(.*?)```", readme, re.S))
    assert len(blocks) == 2, sorted(blocks)
    heavy = ("torch", "torchvision", "ultralytics", "great_expectations", "cv2", "onnxruntime", "pandas", "numpy")
    for name, code in blocks.items():
        (tmp_path / f"{name}.py").write_text(code, encoding="utf-8")
    probe = ("import sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
             f"bag = DagBag(dag_folder={str(tmp_path)!r})\n"
             "assert not bag.import_errors and len(bag.dag_ids) == 2, (bag.import_errors, bag.dag_ids)\n"
             f"print('HEAVY=' + ','.join(m for m in {heavy!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert [line for line in out.splitlines() if line.startswith("HEAVY=")] == ["HEAVY="], out[-2000:]


def test_a_templated_storage_secret_is_checked_by_preflight_only_when_set():
    from secure_data.chain import SanitizeConfig, SanitizeConfigError, sanitize_dataset

    with _dag("chain_templated_secret") as dag:
        sanitize_dataset(SanitizeConfig(source="{{ params.source }}",
                                        storage_secret="{{ params.storage_secret }}",  # noqa: S106 (a KV path)
                                        package_storage_secret="secure-data/packages/s3"))  # noqa: S106
    preflight = dag.get_task("sanitize.preflight")
    env = dag.get_template_env()
    rendered = {value: preflight.render_template(preflight.secret_paths, {"params": {"storage_secret": value}},
                                                 jinja_env=env) for value in (None, "", "secure-data/datasets/x")}
    assert rendered == {None: ["secure-data/packages/s3"], "": ["secure-data/packages/s3"],
                        "secure-data/datasets/x": ["secure-data/datasets/x", "secure-data/packages/s3"]}
    with pytest.raises(SanitizeConfigError, match="one {{ expression }}"):
        SanitizeConfig(source="/d", storage_secret="datasets/{{ params.name }}")  # noqa: S106
