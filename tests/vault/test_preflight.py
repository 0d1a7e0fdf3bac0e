"""The preflight proves the run can do its job and no more; it returns only non-secret facts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from secure_data.operators.preflight import run_preflight
from secure_data.vault.connection import connection_env_for
from secure_data.vault.errors import (
    PreflightError,
    TransitKeyTypeError,
    VaultPermissionError,
    VaultSecretNotFoundError,
)


@pytest.fixture
def hook_for(vault, monkeypatch, airflow_home):
    from secure_data.vault.hook import SecureVaultHook

    def make(creds):
        conn_id = f"vault_pf_{creds.role}".replace("-", "_")
        for name, value in connection_env_for(creds, replace(vault, roles=(creds,)), conn_id=conn_id).items():
            monkeypatch.setenv(name, value)
        return SecureVaultHook(conn_id)

    return make


def _check(hook, vault, role="sanitizer", paths=None, **kw):
    paths = [f"{vault.dataset_prefix}/raw", f"{vault.dataset_prefix}/output"] if paths is None else paths
    return run_preflight(hook, role=role, secret_paths=paths, data_key=kw.pop("data_key", vault.data_key),
                         signing_key=kw.pop("signing_key", vault.signing_key), **kw)


def test_sanitizer_preflight_returns_only_non_secret_facts(vault, hook_for, root_client):
    result = _check(hook_for(vault.sanitizer), vault)
    assert result["identity"] == "AppRole 'sanitizer'" and result["role"] == "sanitizer"
    assert "secure-data-sanitizer" in result["policies"] and 0 < result["token_ttl"] <= 3600
    assert set(result["secret_paths"]) == {f"{vault.dataset_prefix}/raw", f"{vault.dataset_prefix}/output"}
    assert all(v >= 1 for v in result["secret_paths"].values())
    assert result["transit_keys"][vault.data_key]["type"] == "aes256-gcm96"
    assert result["transit_keys"][vault.signing_key]["type"] == "ed25519"
    assert result["can_decrypt"] is False

    text = json.dumps(result)  # XCom-serialisable...
    for path in result["secret_paths"]:  # ...and free of every secret value it touched
        data = root_client.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
        for value in data["data"]["data"].values():
            assert value not in text
    assert vault.sanitizer.secret_id not in text


def test_trainer_preflight(vault, hook_for):
    result = _check(hook_for(vault.trainer), vault, role="trainer", paths=[f"{vault.training_prefix}/package"])
    assert result["can_decrypt"] is True and result["can_sign"] is False


def test_missing_secret_path_fails_the_preflight(vault, hook_for):
    with pytest.raises(VaultSecretNotFoundError, match="datasets/not-there"):
        _check(hook_for(vault.sanitizer), vault, paths=[f"{vault.dataset_prefix}/not-there"])


def test_key_with_wrong_type_fails_the_preflight(vault, hook_for):
    with pytest.raises(TransitKeyTypeError) as err:
        _check(hook_for(vault.sanitizer), vault, signing_key=vault.data_key)
    assert err.value.expected == "ed25519" and err.value.actual == "aes256-gcm96"


def test_key_outside_the_policy_is_a_permission_error(vault, hook_for):
    with pytest.raises(VaultPermissionError, match="transit/keys/some-other-key"):
        _check(hook_for(vault.sanitizer), vault, data_key="some-other-key")


def test_identity_that_can_decrypt_fails_the_safety_check(vault, hook_for, root_client):
    """A misconfigured "sanitizer" whose policy also allows decrypt must be stopped before any data moves."""
    from secure_data.vault.setup import ensure_approle

    t, dk, sk = vault.transit_mount, vault.data_key, vault.signing_key
    root_client.sys.create_or_update_policy(name="too-broad", policy=f'''
path "secret/data/{vault.dataset_prefix}/*" {{ capabilities = ["read"] }}
path "{t}/keys/*" {{ capabilities = ["read"] }}
path "{t}/datakey/plaintext/{dk}" {{ capabilities = ["update"] }}
path "{t}/sign/{sk}" {{ capabilities = ["update"] }}
path "{t}/verify/{sk}" {{ capabilities = ["update"] }}
path "{t}/decrypt/{dk}" {{ capabilities = ["update"] }}
''')
    creds = ensure_approle(root_client, "too-broad", ["too-broad"])
    with pytest.raises(PreflightError, match=f"SAFETY.*{t}/decrypt/{dk}"):
        _check(hook_for(creds), vault)


def test_trainer_identity_cannot_pass_as_sanitizer(vault, hook_for):
    with pytest.raises(PreflightError, match="lacks 'update'.*datakey"):
        _check(hook_for(vault.trainer), vault, paths=[])


def test_operator_rejects_unknown_role():
    from secure_data.operators.preflight import VaultPreflightOperator

    with pytest.raises(ValueError, match="role"):
        VaultPreflightOperator(task_id="p", role="admin")
