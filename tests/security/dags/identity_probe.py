"""What can code running in a task on each queue obtain? (tests/security/test_celery_deployment.py)

One task per queue runs the same probe: the Vault connections visible in its environment, through the
Task SDK's connection lookup (workers-side backend, env, then the API server), in other processes'
environments and in every connections file it can find; then it tries to unwrap the package's data key
with whatever identity it got, and without any. It returns only facts (ids, booleans, error types),
never a secret value.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

CONN_IDS = ("vault_sanitizer", "vault_trainer")


def probe(wrapped: str | None, vault_url: str, candidate_files: list[str]) -> dict:
    import glob
    import json
    import os
    import pwd
    from pathlib import Path

    found: dict = {"user": pwd.getpwuid(os.getuid()).pw_name}
    found["env_conns"] = sorted(k for k in os.environ if k.startswith("AIRFLOW_CONN_"))
    # 1. Task SDK lookup: workers-side secrets backend, this process's env, then the API server.
    from airflow.sdk import BaseHook

    sdk = {}
    for conn_id in CONN_IDS:
        try:
            sdk[conn_id] = bool(BaseHook.get_connection(conn_id).password)
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            sdk[conn_id] = type(exc).__name__
    found["sdk"] = sdk
    # 2. Other processes' environments, and every connections file named anywhere we can see.
    files = set(candidate_files)
    readable_environs = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        readable_environs.append(path)
        for item in data.split(b"\0"):
            if item.startswith(b"AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS="):
                files.add(json.loads(item.split(b"=", 1)[1]).get("connections_file_path", ""))
            if item.startswith(b"AIRFLOW_CONN_VAULT"):
                found.setdefault("conns_in_other_environs", []).append(item.split(b"=", 1)[0].decode())
    readable_files = {}
    for path in sorted(f for f in files if f):
        try:
            readable_files[path] = sorted(json.loads(Path(path).read_text()))
        except OSError as exc:
            readable_files[path] = type(exc).__name__
    found["files"] = readable_files
    # 3. Vault: unwrap the package's data key with every identity we could get, and with none.
    unwrap = {}
    if wrapped:  # the package's wrapped data key (header.json: ciphertext, not a secret)
        from secure_data.vault.keyservice import VaultKeyService

        for conn_id in CONN_IDS:
            try:
                unwrap[conn_id] = bool(VaultKeyService.from_conn_id(conn_id).unwrap(wrapped))
            except Exception as exc:  # noqa: BLE001
                unwrap[conn_id] = type(exc).__name__
        import hvac

        try:
            hvac.Client(url=vault_url).secrets.transit.decrypt_data(name="secure-data-datakey", ciphertext=wrapped)
            unwrap["anonymous"] = True
        except Exception as exc:  # noqa: BLE001
            unwrap["anonymous"] = type(exc).__name__
    found["unwrap"] = unwrap
    return found


with DAG(
    dag_id="secure_data_identity_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"wrapped": Param(None, type=["null", "string"]), "vault_url": Param("", type="string"),
            "files": Param([], type="array")},
    render_template_as_native_obj=True,
    tags=["secure-data", "test"],
) as dag:
    for queue in ("sanitize", "gpu", "train"):
        task(task_id=f"probe_{queue}", queue=queue, retries=0)(probe)(
            "{{ params.wrapped }}", "{{ params.vault_url }}", "{{ params.files }}")
