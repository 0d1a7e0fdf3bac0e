"""``python -m secure_data.vault.setup --emit-airflow-connections``: the README's set-up, against the real OpenBao.

The emitted file is read by Airflow's own loader (the one ``airflow connections import`` and the
local-filesystem secrets backend use); the sanitizer connection then logs in and reads the dataset secret
that ``--secrets-file`` stored. Nothing secret is printed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys


def _setup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "secure_data.vault.setup", *args], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_setup_emits_working_airflow_connections_and_seeds_dataset_secrets(openbao, tmp_path, monkeypatch):
    import hvac
    from airflow.secrets.local_filesystem import load_connections_dict

    monkeypatch.delenv("SECURE_DATA_SANITIZER_VAULT_CONN_ID", raising=False)
    monkeypatch.delenv("SECURE_DATA_TRAINER_VAULT_CONN_ID", raising=False)
    token_file = tmp_path / "root.token"
    token_file.write_text(openbao.root_token)
    secret = {"access_key_id": "QSAKID0000TEST", "secret_access_key": "qs-secret-8c1d2e3f"}
    secrets_file = tmp_path / "dataset-secrets.json"
    secrets_file.write_text(json.dumps({"secure-data/datasets/street-scenes": secret}))
    conns = tmp_path / "conns.json"
    proc = _setup("--url", openbao.url, "--token-file", str(token_file), "--out", str(tmp_path / "creds.json"),
                  "--secrets-file", str(secrets_file), "--emit-airflow-connections", str(conns))
    assert stat.S_IMODE(conns.stat().st_mode) == 0o600
    loaded = load_connections_dict(str(conns))
    assert sorted(loaded) == ["vault_sanitizer", "vault_trainer"]
    printed = proc.stdout + proc.stderr
    for conn in loaded.values():
        assert conn.conn_type == "vault" and conn.extra_dejson["auth_type"] == "approle"
        assert conn.password and conn.password not in printed
    assert secret["secret_access_key"] not in printed

    sanitizer = loaded["vault_sanitizer"]
    client = hvac.Client(url=f"http://{sanitizer.host}:{sanitizer.port}")
    client.auth.approle.login(role_id=sanitizer.login, secret_id=sanitizer.password)
    read = client.secrets.kv.v2.read_secret_version(path="secure-data/datasets/street-scenes",
                                                    mount_point=sanitizer.schema, raise_on_deleted_version=True)
    assert read["data"]["data"] == secret

    # An earlier --out file converts without a token; *.env gives AIRFLOW_CONN_* lines.
    env_file = tmp_path / "conns.env"
    _setup("--creds", str(tmp_path / "creds.json"), "--emit-airflow-connections", str(env_file))
    lines = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert sorted(lines) == ["AIRFLOW_CONN_VAULT_SANITIZER", "AIRFLOW_CONN_VAULT_TRAINER"]
    assert json.loads(lines["AIRFLOW_CONN_VAULT_TRAINER"].strip("'"))["login"] == loaded["vault_trainer"].login
