"""A real DAG run: N tasks in one process do ONE Vault login; a KV canary never reaches logs or XCom.

Two runs of the same DAG file (tests/vault/dags/vault_canary_dag.py):

* ``dag.test()``: every task in this process -> one login for preflight + N tasks,
  counted on the server (live AppRole-login token accessors);
* the production path for logs: each task under Airflow's real supervisor
  (``supervise_task``: forked task process, JSON task log written by the supervisor
  with Airflow's masking processor). The task logs the canary on purpose; the log
  file must show *** instead. Each task is its own process there, so it logs in once
  per task (documented in docs/vault.md).
"""

from __future__ import annotations

import importlib.util
import json
import secrets
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from secure_data.vault.connection import connection_env_for
from secure_data_testkit.airflow_env import register_dag
from secure_data_testkit.vault_fixtures import logins_on_server

DAG_FILE = Path(__file__).parent / "dags" / "vault_canary_dag.py"
N_TASKS = 4


@pytest.fixture
def canary_dag(openbao, vault, root_client, fresh_role, monkeypatch, airflow_home):
    """Env for the DAG file (fresh role, canary path), then the DAG imported and serialized to the DB."""
    canary = "CANARY-" + secrets.token_hex(16)
    canary_path = f"{vault.dataset_prefix}/canary-{secrets.token_hex(3)}"
    # "note" is not a sensitive-looking key name: Airflow's own mask_secret(dict) would skip it.
    root_client.secrets.kv.v2.create_or_update_secret(path=canary_path, secret={"note": canary, "region": "eu"})
    creds = fresh_role("sanitizer")
    env = {
        **connection_env_for(creds, replace(vault, roles=(creds,)), conn_id="vault_dagrun"),
        "SD_TEST_DAG_ID": f"vault_canary_{secrets.token_hex(4)}",
        "SD_TEST_CONN_ID": "vault_dagrun",
        "SD_TEST_CANARY_PATH": canary_path,
        "SD_TEST_RAW_PATH": f"{vault.dataset_prefix}/raw",
        "SD_TEST_SIGNING_KEY": vault.signing_key,
        "SD_TEST_N_TASKS": str(N_TASKS),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(f"vault_canary_dag_{secrets.token_hex(3)}", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    register_dag(module.dag)
    return module.dag, canary, canary_path, creds



def _xcom_and_rendered(dag_id: str) -> tuple[list, str, str]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = session.query(XComModel).filter(XComModel.dag_id == dag_id).all()  # every key, all tasks
        rendered = session.query(RenderedTaskInstanceFields).filter(
            RenderedTaskInstanceFields.dag_id == dag_id).all()
        values = [(x.task_id, x.key, json.loads(x.value) if isinstance(x.value, str) else x.value) for x in xcoms]
        rendered_text = json.dumps([r.rendered_fields for r in rendered], default=str)
    return values, json.dumps(values, default=str), rendered_text


def test_n_tasks_in_one_process_log_in_once(canary_dag, vault, root_client, capfd):
    dag, canary, canary_path, creds = canary_dag
    dag_run = dag.test()
    console = "".join(capfd.readouterr())
    assert str(dag_run.state) == "success", console[-3000:]

    assert logins_on_server(root_client, creds.role) == 1  # preflight + N tasks, one login

    values, xcom_text, rendered_text = _xcom_and_rendered(dag.dag_id)
    returned = {task_id: value for task_id, key, value in values if key == "return_value"}
    assert len(returned) == N_TASKS + 1
    assert canary not in xcom_text and canary not in rendered_text
    preflight = returned["preflight"]
    assert preflight["secret_paths"][canary_path] == 1
    assert preflight["transit_keys"][vault.data_key]["type"] == "aes256-gcm96"
    assert preflight["token_ttl"] > 0 and "secure-data-sanitizer" in preflight["policies"]


def test_canary_is_masked_in_supervised_task_logs(canary_dag, tmp_path, monkeypatch):
    """Real supervisor + forked task process, as a worker runs it: the task log file must not hold the canary."""
    import airflow.sdk.execution_time.supervisor as supervisor_mod
    from airflow.executors.workloads import BundleInfo
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor, supervise_task

    dag, canary, _, _ = canary_dag
    logs = tmp_path / "logs"

    def result(task, state):  # what dag.test's loop reads from run_task_in_process's result
        return SimpleNamespace(ti=SimpleNamespace(state=state, task=task), msg=None, error=None)

    def run_supervised(ti, task, client=None):
        from airflow.models.taskinstance import TaskInstance as DbTI
        from airflow.utils.session import create_session

        exit_code = supervise_task(
            ti=ti, bundle_info=BundleInfo(name="dags-folder", version=None), dag_rel_path=str(DAG_FILE),
            token="", client=InProcessTestSupervisor._api_client(task.dag),
            log_path=str(logs / f"{ti.task_id}.log"),
        )
        with create_session() as session:
            state = session.get(DbTI, ti.id).state
        assert exit_code == 0, f"{ti.task_id}: exit {exit_code}"
        return result(task, state)

    monkeypatch.setattr(supervisor_mod, "run_task_in_process", run_supervised)
    dag_run = dag.test()
    assert str(dag_run.state) == "success"

    task_logs = {p.stem: p.read_text() for p in logs.glob("*.log")}
    assert set(task_logs) == {"preflight"} | {f"careless_{i}" for i in range(N_TASKS)}
    for task_id, text in task_logs.items():
        assert canary not in text, task_id
    for i in range(N_TASKS):
        events = [json.loads(line) for line in task_logs[f"careless_{i}"].splitlines() if line.strip()]
        assert any(e.get("event") == f"task {i} got credential ***" for e in events), task_logs[f"careless_{i}"]
    _, xcom_text, rendered_text = _xcom_and_rendered(dag.dag_id)
    assert canary not in xcom_text and canary not in rendered_text
