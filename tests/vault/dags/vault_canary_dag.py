"""Test DAG for tests/vault/test_dag_run.py: a preflight, then N tasks that read a KV canary and log it.

Parameters come from environment variables set by the test (the supervised task
process re-parses this file, so it must build the same DAG from the same inputs).
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import DAG, task

from secure_data.operators.preflight import VaultPreflightOperator

DAG_ID = os.environ.get("SD_TEST_DAG_ID", "secure_data_vault_canary_test")
CONN_ID = os.environ.get("SD_TEST_CONN_ID", "vault_dagrun")
CANARY_PATH = os.environ.get("SD_TEST_CANARY_PATH", "secure-data/datasets/canary")
RAW_PATH = os.environ.get("SD_TEST_RAW_PATH", "secure-data/datasets/raw")
SIGNING_KEY = os.environ.get("SD_TEST_SIGNING_KEY", "secure-data-signing")
N_TASKS = int(os.environ.get("SD_TEST_N_TASKS", "3"))


@task
def careless(i: int, path: str) -> dict:
    """Reads the canary and (carelessly) logs it: the masker must replace it with ***."""
    from secure_data.vault.hook import SecureVaultHook

    hook = SecureVaultHook(CONN_ID)
    creds = hook.read_kv(path)
    logging.getLogger("airflow.task").warning("task %d got credential %s", i, creds["note"])
    signature = hook.sign(SIGNING_KEY, b"manifest-%d" % i)
    return {"i": i, "signature_chars": len(signature), "keys": sorted(creds)}


with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    preflight = VaultPreflightOperator(task_id="preflight", vault_conn_id=CONN_ID,
                                       secret_paths=[CANARY_PATH, RAW_PATH])
    for n in range(N_TASKS):
        preflight >> careless.override(task_id=f"careless_{n}")(n, CANARY_PATH)
