"""The chain on a real multi-worker deployment, and what each worker's tasks can and cannot obtain.

CeleryExecutor with Debian's Redis (broker) and PostgreSQL (metadata DB), three Celery workers on the
queues sanitize, gpu and train, each as its own Unix user; the sanitizer's Vault connection only on the
sanitize worker and the trainer's only on the train worker (workers-side secrets backend, 0600 files),
none on the gpu worker and none on the API server (secure_data_testkit.celery_stack).

Regression of issue 13's second finding: docker-compose put both AppRole secret_ids into every container,
so code in any task (the GPU task loading models included) could log in as the trainer and unwrap any
package; Airflow 3 tasks can also fetch any connection the API server knows by id.
"""

from __future__ import annotations

import os
import shutil

import pytest

from secure_data_testkit.celery_stack import USERS, demo_deployment, deployment_workdir, unavailable
from secure_data_testkit.demo import SANITIZE_DAG, TRAIN_DAG, make_demo_dataset, run_chain

pytestmark = pytest.mark.slow
PROBE_DAG = "secure_data_identity_probe"


@pytest.fixture(scope="module")
def deployment(openbao):
    from secure_data_testkit.airflow_env import REPO_ROOT
    from secure_data_testkit.vault_fixtures import bootstrap_test_vault

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    work = deployment_workdir()
    probe = REPO_ROOT / "tests" / "security" / "dags" / "identity_probe.py"
    try:
        with demo_deployment(work, openbao.url, bootstrap_test_vault(openbao), extra_dags=(probe,),
                             log=lambda m: print(f"[celery] {m}")) as dep:
            for dag_id in (SANITIZE_DAG, TRAIN_DAG, PROBE_DAG):
                dep.stack.wait_for_dag(dag_id)
            yield dep
    finally:
        if not os.environ.get("SECURE_DATA_KEEP_DEPLOYMENT"):  # set it to look at the logs after a failure
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def chain(deployment):
    source = make_demo_dataset(deployment.workdir / "dataset", n_train=4, n_val=2, include_real_photos=False)
    return run_chain(deployment, source, conf={"shard_size": 3}, timeout=600)


def _ran_on(deployment, dag_id: str, run_id: str, task_id: str) -> set[str]:
    """The workers whose log folder holds a log of this task in this run (each worker logs locally)."""
    return {q for q in ("sanitize", "gpu", "train")
            if list((deployment.worker_home(q) / "logs" / f"dag_id={dag_id}").glob(f"run_id={run_id}*/task_id={task_id}/"))}


def test_whole_chain_runs_on_three_workers_each_task_on_its_queue(deployment, chain):
    assert chain["sanitize_state"] == "success" and chain["training_state"] == "success", chain
    assert chain["ok"] and chain["trained_package_id"] == chain["package_id"]
    run_id = chain["sanitize_run_id"]
    tis = deployment.stack.task_instances(SANITIZE_DAG, run_id)
    queues = {(t["task_id"], t["map_index"]): t["queue"] for t in tis if t["state"] == "success"}
    shards = [q for (task_id, _), q in queues.items() if task_id == "anonymize"]
    assert len(shards) >= 2 and set(shards) == {"gpu"}, shards
    assert _ran_on(deployment, SANITIZE_DAG, run_id, "anonymize") == {"gpu"}
    for task_id in ("policy", "preflight", "integrity", "poisoning", "anonymize_merge", "handoff"):
        assert queues[(task_id, -1)] == "sanitize", task_id
        assert _ran_on(deployment, SANITIZE_DAG, run_id, task_id) == {"sanitize"}, task_id
    (train,) = deployment.stack.task_instances(TRAIN_DAG, chain["training_run_id"])
    assert train["queue"] == "train"
    assert _ran_on(deployment, TRAIN_DAG, chain["training_run_id"], "train") == {"train"}


@pytest.fixture(scope="module")
def probes(deployment, chain, openbao):
    import json
    from pathlib import Path
    from urllib.parse import urlsplit

    files = [str(deployment.worker_home(q) / "secrets" / "connections.json") for q in ("sanitize", "train")]
    header = json.loads((Path(urlsplit(chain["package_uri"]).path) / "header.json").read_text())
    run_id = deployment.stack.trigger(PROBE_DAG, {"wrapped": header["data_key"]["wrapped"],
                                                  "vault_url": openbao.url, "files": files})
    run = deployment.stack.wait_for_run(PROBE_DAG, run_id, timeout=300)
    assert run["state"] == "success", deployment.stack.task_instances(PROBE_DAG, run_id)
    return {q: deployment.stack.xcom(PROBE_DAG, run_id, f"probe_{q}") for q in ("sanitize", "gpu", "train")}


def _readable(found: dict) -> set[str]:
    return {conn for ids in found["files"].values() if isinstance(ids, list) for conn in ids}


def test_gpu_task_obtains_no_vault_credential_and_cannot_unwrap(probes):
    gpu = probes["gpu"]
    assert gpu["user"] == USERS["gpu"]
    assert gpu["env_conns"] == [] and not gpu.get("conns_in_other_environs")
    assert gpu["sdk"] == {"vault_sanitizer": "AirflowNotFoundException", "vault_trainer": "AirflowNotFoundException"}
    assert _readable(gpu) == set(), gpu["files"]
    assert not [k for k, v in gpu["unwrap"].items() if v is True], gpu["unwrap"]


def test_sanitize_task_has_only_the_sanitizer_and_cannot_unwrap(probes):
    sanitize = probes["sanitize"]
    assert sanitize["user"] == USERS["sanitize"]
    assert sanitize["sdk"]["vault_sanitizer"] is True  # it needs it: data keys, signing
    assert sanitize["sdk"]["vault_trainer"] == "AirflowNotFoundException"
    assert _readable(sanitize) == {"vault_sanitizer"}, sanitize["files"]
    assert not sanitize.get("conns_in_other_environs")
    assert not [k for k, v in sanitize["unwrap"].items() if v is True], sanitize["unwrap"]


def test_probe_finds_what_is_there_on_the_trainer(probes):
    """Positive control: the same probe on the train worker obtains the trainer and unwraps; so its
    negative answers on the other workers are evidence, not a probe that cannot see."""
    train = probes["train"]
    assert train["user"] == USERS["train"]
    assert train["sdk"] == {"vault_sanitizer": "AirflowNotFoundException", "vault_trainer": True}
    assert train["unwrap"]["vault_trainer"] is True
    assert train["unwrap"]["vault_sanitizer"] != True  # noqa: E712 - a value or an error type name
