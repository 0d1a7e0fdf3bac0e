"""SecureVaultHook over the provider's VaultHook: connection extras (namespace), provider methods share the login."""

from __future__ import annotations

import json

import pytest

from secure_data.vault.connection import connection_json_for, connection_uri_for
from secure_data.vault.errors import VaultLoginError
from secure_data.vault.setup import bootstrap


def test_provider_methods_and_transit_share_one_login(openbao, vault, monkeypatch, airflow_home):
    from airflow.providers.hashicorp.hooks.vault import VaultHook

    from secure_data.vault.hook import SecureVaultHook

    monkeypatch.setenv("AIRFLOW_CONN_VAULT_HOOKTEST", connection_uri_for("sanitizer", vault))
    hook = SecureVaultHook("vault_hooktest")
    assert isinstance(hook, VaultHook)
    raw = hook.get_secret(f"{vault.dataset_prefix}/raw")  # the provider's own method
    assert set(raw) == {"access_key_id", "secret_access_key"}
    assert hook.verify(vault.signing_key, b"m", hook.sign(vault.signing_key, b"m"))
    again = SecureVaultHook("vault_hooktest")
    assert again.get_secret(f"{vault.dataset_prefix}/output") is not None
    assert again.session is hook.session and hook.session.logins == 1
    ok, message = again.test_connection()
    assert ok and "secure-data-sanitizer" in message


def test_namespace_extra(openbao, root_client, monkeypatch, airflow_home):
    from secure_data.vault.hook import SecureVaultHook

    root_client.adapter.post("/v1/sys/namespaces/team-a")
    result = bootstrap(openbao.url, openbao.root_token, namespace="team-a")
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_NS", connection_json_for("sanitizer", result, namespace="team-a"))
    hook = SecureVaultHook("vault_ns")
    key = hook.generate_data_key(result.data_key)
    assert key.wrapped.startswith("vault:v1:")
    assert set(hook.read_kv(f"{result.dataset_prefix}/raw")) == {"access_key_id", "secret_access_key"}

    # The same role_id outside the namespace does not exist: a clear login error.
    conn = json.loads(connection_json_for("sanitizer", result))
    monkeypatch.setenv("AIRFLOW_CONN_VAULT_NO_NS", json.dumps(conn))
    with pytest.raises(VaultLoginError, match="approle"):
        SecureVaultHook("vault_no_ns").token_facts()


def test_connection_forms_round_trip(vault, airflow_home):
    from airflow.models.connection import Connection

    uri = connection_uri_for("trainer", vault)
    conn = Connection(conn_id="x", uri=uri)
    assert conn.conn_type == "vault" and conn.login == vault.trainer.role_id
    assert conn.password == vault.trainer.secret_id and conn.schema == vault.kv_mount
    assert conn.extra_dejson["auth_type"] == "approle" and conn.extra_dejson["use_tls"] in (False, "false")
    as_json = json.loads(connection_json_for("trainer", vault))
    assert as_json["host"] == "127.0.0.1" and as_json["extra"]["transit_mount"] == vault.transit_mount
