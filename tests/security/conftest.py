"""Security regression fixtures: the real sanitizer / trainer identities on the session OpenBao."""

from __future__ import annotations

import pytest

from secure_data_testkit.vault_fixtures import bootstrap_test_vault


@pytest.fixture(scope="session")
def identities(openbao):
    """{role: VaultKeyService} for the sanitizer and the trainer of the bootstrapped session server."""
    from secure_data.vault.keyservice import VaultKeyService

    vault = bootstrap_test_vault(openbao)
    return {role: VaultKeyService.for_approle(openbao.url, vault.role(role).role_id, vault.role(role).secret_id)
            for role in ("sanitizer", "trainer")}


@pytest.fixture
def deployment_models(tmp_path, monkeypatch):
    """A deployment with one pinned model file (never loaded by these tests) and the built-in policy."""
    import hashlib

    model = tmp_path / "deployment" / "detector.pt"
    model.parent.mkdir()
    model.write_bytes(b"deployment model bytes")
    monkeypatch.delenv("SECURE_DATA_POLICY_FILE", raising=False)
    monkeypatch.delenv("SECURE_DATA_FACE_MODEL_PATH", raising=False)
    monkeypatch.setenv("SECURE_DATA_MODEL_PATH", str(model))
    monkeypatch.setenv("SECURE_DATA_MODEL_SHA256", hashlib.sha256(model.read_bytes()).hexdigest())
    return model
