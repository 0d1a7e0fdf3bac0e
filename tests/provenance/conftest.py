"""Provenance fixtures: the real sanitizer / trainer identities on the session OpenBao, and their signers."""

from __future__ import annotations

import pytest

from secure_data.testing.vault_fixtures import bootstrap_test_vault


@pytest.fixture(scope="session")
def vault(openbao):
    return bootstrap_test_vault(openbao)


@pytest.fixture(scope="session")
def identities(openbao, vault):
    """``{role: VaultKeyService}`` for the sanitizer and the trainer (one AppRole login each)."""
    from secure_data.vault.keyservice import VaultKeyService

    return {role: VaultKeyService.for_approle(openbao.url, vault.role(role).role_id, vault.role(role).secret_id)
            for role in ("sanitizer", "trainer")}


@pytest.fixture(scope="session")
def sanitizer_ks(identities):
    return identities["sanitizer"]


@pytest.fixture(scope="session")
def trainer_ks(identities):
    return identities["trainer"]


@pytest.fixture(scope="session")
def attestation_signer(sanitizer_ks):
    """The sanitizer's Transit ECDSA signer (the private key stays in OpenBao)."""
    from secure_data.handoff.attest import TransitAttestationSigner

    return TransitAttestationSigner(sanitizer_ks.ops)


@pytest.fixture(scope="session")
def public_key_pem(trainer_ks, tmp_path_factory):
    """The attestation key's public key, exported by the TRAINER (read-only on the key) to a PEM file."""
    from secure_data.handoff.attest import export_public_key

    path = tmp_path_factory.mktemp("keys") / "attestation.pub.pem"
    path.write_bytes(export_public_key(trainer_ks.ops))
    return path
