"""Vault test fixtures: a bootstrapped OpenBao (the session `openbao` fixture) and helpers."""

from __future__ import annotations

import secrets

import pytest

from secure_data.vault.session import reset_shared_sessions
from secure_data_testkit.vault_fixtures import bootstrap_test_vault


@pytest.fixture(scope="session")
def vault(openbao):
    """BootstrapResult for the session server: roles sanitizer, trainer, keyadmin; keys; demo secrets."""
    return bootstrap_test_vault(openbao)


@pytest.fixture
def root_client(openbao):
    import hvac

    return hvac.Client(url=openbao.url, token=openbao.root_token)


@pytest.fixture(autouse=True)
def _fresh_sessions():
    """Each test starts without cached logins, so login counts are per test."""
    reset_shared_sessions()
    yield
    reset_shared_sessions()


@pytest.fixture
def fresh_role(root_client, vault):
    """Factory: a new AppRole with a role's policy (unique name, so server-side login counts are exact)."""
    from secure_data.vault.setup import ensure_approle, policy_name

    def make(like: str = "sanitizer", **ttl):
        name = f"{like}-{secrets.token_hex(4)}"
        creds = ensure_approle(root_client, name, [policy_name(like)], **ttl)
        return creds

    return make

